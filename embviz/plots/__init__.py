"""Draw functions: each takes data (a DataFrame from the pure modules) and an optional Axes.

They return the Figure, never compute bytes or statistics themselves, and never call
``plt.show()``, so widgets, the report and notebooks can all use them.
"""

from __future__ import annotations

from embviz.plots.dtypes import plot_dtype_savings
from embviz.plots.health import plot_health_history, plot_row_drift, plot_spectrum
from embviz.plots.memory import OKABE_ITO, plot_memory, plot_placement
from embviz.plots.norms import (
    plot_fp16_tradeoff,
    plot_norm_bands,
    plot_norm_histograms,
    plot_projection,
)
from embviz.plots.projection import plot_norm_selection, plot_projection_sample

__all__: list[str] = [
    "OKABE_ITO",
    "plot_dtype_savings",
    "plot_fp16_tradeoff",
    "plot_health_history",
    "plot_memory",
    "plot_norm_bands",
    "plot_norm_histograms",
    "plot_norm_selection",
    "plot_placement",
    "plot_projection",
    "plot_projection_sample",
    "plot_row_drift",
    "plot_spectrum",
]

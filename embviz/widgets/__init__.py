"""Notebook widgets: wiring of the pure functions to ipywidgets, no arithmetic of their own.

- `CollectionEditor`: edit the tables, see memory, GPU fit and placement as you type.
- `BuildPanel`: build the collection on a device and compare predicted with measured bytes.
- `NormsPanel`: norms, quantiles over steps, projections and neighbours of logged tables.
- `ServingPanel`: serving dtypes per table, their bytes and the fit on serving hosts.
"""

from __future__ import annotations

from embviz.widgets.build_panel import BuildPanel
from embviz.widgets.editor import CollectionEditor
from embviz.widgets.norms_panel import NormsPanel
from embviz.widgets.serving_panel import ServingPanel

__all__ = ["BuildPanel", "CollectionEditor", "NormsPanel", "ServingPanel"]

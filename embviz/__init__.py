"""embviz: size, place, build and inspect torchrec embedding tables from Jupyter.

The config layer is imported eagerly; everything that needs torch, torchrec, pandas or
matplotlib is imported on first use, so ``embviz validate`` starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

from embviz.config import (
    AdagradConfig,
    AdamConfig,
    ConfigError,
    DataType,
    EmbeddingBagConfig,
    EmbeddingSnapshot,
    FusedKernelWarning,
    LargeEmbeddingsConfig,
    LearningRate,
    LinearRampToConstant,
    LinearRampToCosine,
    Mode,
    OptimizerConfig,
    PiecewiseConstant,
    SgdConfig,
    config_schema,
    dump_config,
    example,
    load_config,
    parse_config,
)
from embviz.errors import EmbvizError

__version__ = "0.1.0"

# Public name -> module that defines it, imported on first attribute access.
_LAZY: dict[str, str] = {
    "compare_configs": "embviz.compare",
    "write_report": "embviz.report",
    "ReportError": "embviz.report",
    "plot_memory": "embviz.plots",
    "plot_dtype_savings": "embviz.plots",
    "plot_placement": "embviz.plots",
    "GpuFit": "embviz.memory",
    "MemoryArgumentError": "embviz.memory",
    "UnknownTableError": "embviz.memory",
    "binary_unit": "embviz.memory",
    "gpu_fit": "embviz.memory",
    "human_bytes": "embviz.memory",
    "memory_table": "embviz.memory",
    "totals": "embviz.memory",
    "with_dtype": "embviz.memory",
    "with_totals": "embviz.memory",
    "dtype_savings": "embviz.memory",
    "largest_tables": "embviz.memory",
    "block_bytes": "embviz.memory",
    "compact_bytes": "embviz.memory",
    "SERVING_DTYPES": "embviz.serving",
    "ServingWidthError": "embviz.serving",
    "planner_serving_bytes": "embviz.serving",
    "serving_bytes": "embviz.serving",
    "serving_row_bytes": "embviz.serving",
    "serving_table_bytes": "embviz.serving",
    "dequantize": "embviz.quantization",
    "quantization_error": "embviz.quantization",
    "quantization_error_table": "embviz.quantization",
    "Placement": "embviz.plan",
    "PlanArgumentError": "embviz.plan",
    "PlanError": "embviz.plan",
    "plan": "embviz.plan",
    "SnapshotError": "embviz.snapshots",
    "checkpoints": "embviz.snapshots",
    "read_table": "embviz.snapshots",
    "save_snapshot": "embviz.snapshots",
    "snapshot_tables": "embviz.snapshots",
    "VocabError": "embviz.vocab",
    "collision_share": "embviz.vocab",
    "load_vocab": "embviz.vocab",
    "suggested_dims": "embviz.vocab",
    "vocab_report": "embviz.vocab",
    "write_vocab": "embviz.vocab",
    "BuildError": "embviz.build",
    "BuildRefused": "embviz.build",
    "BuildWarning": "embviz.build",
    "build_collection": "embviz.build",
    "measure_collection": "embviz.build",
    "predicted_vs_measured": "embviz.build",
    "preflight": "embviz.build",
    "scale_config": "embviz.build",
    "train_demo": "embviz.demo",
    "EmptyTableError": "embviz.norms",
    "NormError": "embviz.norms",
    "RowIndexError": "embviz.norms",
    "UnknownEntityError": "embviz.norms",
    "exact_quantiles": "embviz.norms",
    "fp16_error": "embviz.norms",
    "fp16_error_table": "embviz.norms",
    "local_row_ids": "embviz.norms",
    "nearest": "embviz.norms",
    "norm_histogram": "embviz.norms",
    "norm_history": "embviz.norms",
    "norm_stats": "embviz.norms",
    "load_table": "embviz.norms",
    "table_names": "embviz.norms",
    "project": "embviz.norms",
    "row_norm_backend": "embviz.norms",
    "row_norm_throughput": "embviz.norms",
    "row_norms": "embviz.norms",
    "sample_rows": "embviz.norms",
    "BuildCheck": "embviz.build",
    "build_and_measure": "embviz.build",
    "ShardError": "embviz.distributed",
    "ShardedBuild": "embviz.distributed",
    "build_sharded": "embviz.distributed",
    "BuildPanel": "embviz.widgets",
    "CollectionEditor": "embviz.widgets",
    "NormsPanel": "embviz.widgets",
}

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "ConfigError",
    "DataType",
    "EmbeddingBagConfig",
    "EmbeddingSnapshot",
    "EmbvizError",
    "FusedKernelWarning",
    "LargeEmbeddingsConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "Mode",
    "OptimizerConfig",
    "PiecewiseConstant",
    "SgdConfig",
    "config_schema",
    "dump_config",
    "example",
    "load_config",
    "parse_config",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""Row norms of embedding tables: accurate, fast, bounded in memory, and over training steps.

the-algorithm-ml's ``log_ebc_norms`` (``common/log_weights.py``) logs one number per table and
rank: the mean L2 norm of up to 4,000,000 rows picked with ``torch.randperm`` over all rows,
gathered and copied to the CPU. This package computes the norm of *every* row instead, faster
than that sample, and turns the norms into distributions (`norm_stats`), their movement over
checkpoints (`norm_history`), and a look at the rows themselves (`nearest`, `project`,
`fp16_error`).

One job per module:

- `embviz.norms.layout`: the local rows of a table (a tensor, a ShardedTensor, local shards);
- `embviz.norms.kernel`: backend selection (`row_norm_backend`) and the checked entry point of
  the numba kernel, `embviz.norms.jit` (float64 sums per row, compiled in memory on first use);
- `embviz.norms.rownorms`: `row_norms`, bounded in memory (`MEMORY_BUDGET_BYTES`);
- `embviz.norms.sampling`: `sample_rows`, `exact_quantiles`;
- `embviz.norms.sources`: tables of a module, a state dict or a snapshot path (`table_names`,
  `load_table`);
- `embviz.norms.stats`: `norm_stats`, `norm_history`, `norm_histogram`;
- `embviz.norms.streaming`: row norms of a snapshot's table read in bounded blocks;
- `embviz.norms.neighbours`: `nearest`; `embviz.norms.projection`: `project` (PCA of every
  row, stratified samples, UMAP; what `embviz.Projector` shows);
- `embviz.norms.fp16`: `fp16_error`, `fp16_error_table`;
- `embviz.norms.errors`: the errors they raise.

Tables come from three kinds of *source*:

- an ``nn.Module`` holding an ``EmbeddingBagCollection`` (the collection itself, a model, a
  ``DistributedModelParallel``), whose ``state_dict()`` keys end in
  ``embedding_bags.<name>.weight``;
- a state dict (a mapping of those keys to tensors, or of table names to 2-D tensors);
- the path of a torchsnapshot (``save_dir/<step>``), read through the checked reader of
  `embviz.snapshot_reader`, one table at a time and only the tables asked for. Statistics of its
  row norms (`norm_stats`, `norm_history`, `norm_histogram`) stream the table in bounded blocks
  and hold only its norms (4 bytes a row), never the table.
"""

from embviz.norms.errors import EmptyTableError, NormError, RowIndexError, UnknownEntityError
from embviz.norms.fp16 import fp16_error, fp16_error_table
from embviz.norms.kernel import row_norm_backend
from embviz.norms.layout import local_row_ids
from embviz.norms.neighbours import Neighbours, nearest
from embviz.norms.projection import Projection, ProjectorError, project
from embviz.norms.rownorms import MEMORY_BUDGET_BYTES, row_norms
from embviz.norms.sampling import exact_quantiles, sample_rows
from embviz.norms.sources import load_table, table_names
from embviz.norms.stats import (
    QUANTILES,
    STAT_COLUMNS,
    NormHistogram,
    norm_histogram,
    norm_history,
    norm_stats,
)

__all__ = [
    "MEMORY_BUDGET_BYTES",
    "QUANTILES",
    "STAT_COLUMNS",
    "EmptyTableError",
    "Neighbours",
    "NormError",
    "NormHistogram",
    "Projection",
    "ProjectorError",
    "RowIndexError",
    "UnknownEntityError",
    "exact_quantiles",
    "fp16_error",
    "fp16_error_table",
    "load_table",
    "local_row_ids",
    "nearest",
    "norm_histogram",
    "norm_history",
    "norm_stats",
    "project",
    "row_norm_backend",
    "row_norms",
    "sample_rows",
    "table_names",
]

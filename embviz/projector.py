"""`Projector`: every row of a table placed in 2-D, coloured, labelled by entity, interactive.

The data side is pure and needs no widget library: `Projector(...).frame` holds one row per
shown table row (``row``, ``x``, ``y``, ``norm``, ``entity`` with a vocabulary, and the colour's
column), computed by `embviz.project`. The interactive view (a WebGL scatter from
``jupyter-scatter``, a linked norm histogram and a neighbour table) is built on first display,
in `embviz.widgets.projector`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embviz.norms.projection import ProjectorError, color_values

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from embviz.norms.projection import Projection

__all__ = ["Projector", "ProjectorError", "procrustes_distance"]

# float64 bytes a block of rows may take while the table is read.
_BLOCK_BYTES = 32 * 2**20


def _weight(source: Any, table: str | None, what: str = "source") -> Any:
    """The 2-D weight a projector shows: a table of a source, or a tensor given directly.

    A snapshot path gives an `embviz.SnapshotTable` (read block by block, never whole).
    """
    import torch

    from embviz.snapshot_rows import SnapshotTable, is_snapshot_path

    if isinstance(source, torch.Tensor | SnapshotTable):
        if table is not None:
            raise ProjectorError(f"{what}: a tensor is one table; leave table=None")
        weight = source
    else:
        from embviz.norms import load_table, table_names

        if table is None:
            names = table_names(source)
            if len(names) != 1:
                raise ProjectorError(
                    f"{what}: holds {len(names)} tables; name one with table= "
                    f"({', '.join(names[:20])})"
                )
            table = names[0]
        if is_snapshot_path(source):
            known = table_names(source)
            if table not in known:
                from embviz.errors import UnknownTableError

                raise UnknownTableError([table], known)
            weight = SnapshotTable(source, table)
        else:
            weight = load_table(source, table)
    weight = getattr(weight, "weight", weight)
    if isinstance(weight, SnapshotTable):
        if not weight.dtype.is_floating_point:
            raise ProjectorError(
                f"{what}: the table must be a 2-D float tensor, got {tuple(weight.shape)} "
                f"{weight.dtype}"
            )
        return weight
    if not isinstance(weight, torch.Tensor) or weight.layout != torch.strided:
        raise ProjectorError(
            f"{what}: the table must be a dense 2-D tensor (gather a sharded table first, e.g. "
            f"from its snapshot); got {type(weight).__name__}"
        )
    if weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ProjectorError(
            f"{what}: the table must be a 2-D float tensor, got {tuple(weight.shape)} "
            f"{weight.dtype}"
        )
    return weight.detach()


def _step(cols: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, 8 * cols))


def procrustes_distance(
    weight: torch.Tensor, against: torch.Tensor, rows: np.ndarray
) -> np.ndarray:
    """Per-row drift of ``weight`` from ``against``, after orthogonal Procrustes alignment.

    The rotation ``R`` minimising ``||against @ R - weight||`` (Frobenius) is fitted over every
    row, from ``against.T @ weight`` accumulated in float64 over blocks of rows
    (``R = U @ Vt`` of its SVD). The drift of row ``i`` is the L2 distance
    ``||against[i] @ R - weight[i]||``, in the table's units: a checkpoint that only rotated has
    no drift. The same measure as ``aligned_distance`` of `embviz.row_drift`, which fits ``R``
    on a sample; here it is fitted on every row and given for the rows a projector shows.

    Parameters
    ----------
    weight, against : torch.Tensor
        The same table at two checkpoints, of the same shape.
    rows : numpy.ndarray
        The rows to give the drift of.

    Returns
    -------
    numpy.ndarray
        float32, one distance per entry of ``rows``.
    """
    import torch

    if tuple(against.shape) != tuple(weight.shape):
        raise ProjectorError(
            f"against: the table has shape {tuple(against.shape)}, this one "
            f"{tuple(weight.shape)}; drift needs the same table at another checkpoint"
        )
    n, d = int(weight.shape[0]), int(weight.shape[1])
    step = _step(d)
    cross = torch.zeros(d, d, dtype=torch.float64)
    with torch.no_grad():
        for a in range(0, n, step):
            before = against[a : a + step].to(torch.float64)
            cross += (before.T @ weight[a : a + step].to(torch.float64)).cpu()
        u, _, vt = torch.linalg.svd(cross)
        rotation = (u @ vt).to(weight.device)
        out = np.empty(len(rows), dtype=np.float32)
        index = torch.from_numpy(np.array(rows, dtype=np.int64))
        for a in range(0, len(rows), step):
            ids = index[a : a + step]
            x = weight.index_select(0, ids.to(weight.device)).to(torch.float64)
            y = against.index_select(0, ids.to(against.device)).to(torch.float64)
            moved = torch.linalg.vector_norm(y.to(x.device) @ rotation - x, dim=1)
            out[a : a + len(ids)] = moved.cpu().numpy()
    return out


class Projector:
    """Every row of one embedding table in 2-D: placed by PCA (or UMAP), coloured, labelled.

    Parameters
    ----------
    source : module, state dict, snapshot path, torch.Tensor or SnapshotTable
        What `embviz.norm_stats` takes, or a 2-D tensor (then ``table`` stays None). A snapshot
        path is never read whole (`embviz.SnapshotTable`): the PCA pass and the norms stream
        its blocks, the shown rows (and a clicked row's neighbour scan) read it block by block.
    table : str, optional
        The table's name; may be left out when the source holds one table.
    vocab : path, Series, DataFrame or mapping, optional
        Entity id -> row (`embviz.load_vocab`): adds ``entity`` (the first id mapped to each row).
    color : {"norm", "count", "drift"} or pandas.Series
        What the points are coloured by: the row's L2 norm (log scale), its lookup count (needs
        ``counts``), its drift against another checkpoint (needs ``against``; see
        `procrustes_distance`), or a per-row Series the user passes (indexed by row; its name
        becomes the column).
    method : {"pca", "umap"}
        PCA: the table's first two principal components, fitted on every row. UMAP: see
        `embviz.project`; needs ``umap-learn``.
    max_points : int
        Rows shown: every row up to this many, above it a stratified sample of this many.
    seed : int
        Seeds the sample (and UMAP).
    counts : pandas.Series, array or mapping, optional
        Lookup counts per row (a Series indexed by row, or an array of one count per row; a
        mapping of table name to either). Samples are then stratified by count, not norm.
    against : same kinds as ``source``, optional
        The same table at another checkpoint, for ``color="drift"``.
    umap : mapping, optional
        UMAP parameters (`embviz.project`).
    k : int
        Neighbours shown for a clicked point.
    progress : bool
        A tqdm bar over the pass that fits the PCA (seconds for tens of millions of rows).

    Attributes
    ----------
    projection : embviz.Projection
        What `embviz.project` returned: the frame, explained variance, the sample's strata.
    """

    def __init__(
        self,
        source: Any,
        table: str | None = None,
        vocab: Any = None,
        color: str | pd.Series = "norm",
        method: Literal["pca", "umap"] = "pca",
        max_points: int = 2_000_000,
        seed: int = 0,
        counts: Any = None,
        against: Any = None,
        *,
        umap: Mapping[str, Any] | None = None,
        k: int = 10,
        progress: bool = True,
    ):
        import pandas as pd

        from embviz.norms.labels import as_vocab
        from embviz.norms.projection import as_counts, project

        self.table = table
        self._weight = _weight(source, table)
        rows = int(self._weight.shape[0])
        if isinstance(counts, Mapping) and table is not None and table in counts:
            counts = counts[table]
        self._counts = as_counts(counts, rows)
        self._vocab = as_vocab(vocab, rows)
        self.k = _positive_int("k", k)
        max_points = _positive_int("max_points", max_points)
        if isinstance(color, pd.Series):
            color_name = str(color.name) if color.name is not None else "value"
            if color_name in ("row", "x", "y", "norm", "entity"):
                raise ProjectorError(f"color: a Series named {color_name!r} would hide a column")
        elif color in ("norm", "count", "drift"):
            color_name = str(color)
            if color == "count" and self._counts is None:
                raise ProjectorError("color='count' needs counts= (lookup counts per row)")
            if color == "drift" and against is None:
                raise ProjectorError("color='drift' needs against= (the table at another step)")
        else:
            raise ProjectorError(
                "color must be 'norm', 'count', 'drift' or a pandas Series indexed by row, "
                f"got {color!r}"
            )
        self.projection: Projection = project(
            self._weight,
            n=max_points,
            method=method,
            seed=seed,
            vocab=self._vocab,
            counts=self._counts,
            umap=umap,
            progress=progress,
        )
        frame = self.projection.frame
        shown = frame["row"].to_numpy()
        if self._counts is not None:
            frame["count"] = self._counts[shown]
        if color_name == "drift":
            other = _weight(against, table, what="against")
            frame["drift"] = procrustes_distance(self._weight, other, shown)
        elif isinstance(color, pd.Series):
            picked = color.reindex(shown)
            # A categorical Series stays categorical (community ids are labels, not a scale).
            categorical = isinstance(picked.dtype, pd.CategoricalDtype)
            frame[color_name] = picked.array if categorical else picked.to_numpy()
        self.color = color_name
        self._positions = np.empty(0, dtype=np.int64)
        self._listeners: list[Any] = []
        self._widget: Any = None

    # ------------------------------------------------------------------ data

    @property
    def frame(self) -> pd.DataFrame:
        """Every shown row: ``row``, ``x``, ``y``, ``norm``, [``entity``], [colour column]."""
        return self.projection.frame

    @property
    def explained_variance(self) -> tuple[float, float] | None:
        """Share of the table's variance along x and y (PCA), None for UMAP."""
        return self.projection.explained_variance

    @property
    def description(self) -> str:
        """What is shown, in words: rows, the sample (when there is one), method and colour."""
        title = color_values(self.frame, self.color)[1]
        return f"{self.projection.description} Colour: {title}."

    @property
    def selection(self) -> pd.DataFrame:
        """The selected rows (``row``, [``entity``], ``norm``, ``x``, ``y``), in frame order."""
        columns = [c for c in ("row", "entity", "norm", "x", "y") if c in self.frame.columns]
        return self.frame.iloc[np.sort(self._positions)][columns].reset_index(drop=True)

    def select(self, rows: Sequence[int] | np.ndarray | None) -> pd.DataFrame:
        """Select table rows (shown ones; None clears); the view follows. Returns `selection`.

        Raises
        ------
        ProjectorError
            A row that is not shown (outside the table, or left out of the sample).
        """
        wanted = np.asarray([] if rows is None else rows, dtype=np.int64).ravel()
        shown = self.frame["row"].to_numpy()
        positions = np.searchsorted(shown, wanted)
        positions = np.minimum(positions, len(shown) - 1)
        missing = wanted[shown[positions] != wanted]
        if missing.size:
            listed = ", ".join(str(r) for r in missing[:5])
            raise ProjectorError(
                f"rows not shown ({missing.size}): {listed} (the frame holds "
                f"{len(shown):,} of {self.projection.rows:,} rows)"
            )
        self._set_positions(np.unique(positions))
        return self.selection

    def neighbours(self, row: int, k: int | None = None) -> pd.DataFrame:
        """`embviz.nearest` of a table row (cosine), with ``entity`` labels where known."""
        from embviz.norms import nearest

        found = nearest(self._weight, int(row), k=self.k if k is None else k).frame
        if self._vocab is not None:
            from embviz.norms.labels import entity_labels

            found.insert(2, "entity", entity_labels(self._vocab, found["row"].to_numpy()))
        return found

    # ------------------------------------------------------------------ view

    @property
    def widget(self) -> Any:
        """The interactive view (`embviz.widgets.projector.ProjectorView`), built on first use."""
        if self._widget is None:
            from embviz.widgets.projector import ProjectorView

            self._widget = ProjectorView(self)
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def observe_selection(self, callback: Any) -> None:
        """Call ``callback(selection_frame)`` whenever the selection changes."""
        self._listeners.append(callback)

    def _set_positions(self, positions: np.ndarray) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if np.array_equal(positions, self._positions):
            return
        self._positions = positions
        for callback in list(self._listeners):
            callback(self.selection)

    @property
    def positions(self) -> np.ndarray:
        """Positions (in `frame`) of the selected rows."""
        return self._positions.copy()


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ProjectorError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)

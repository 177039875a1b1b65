"""Embedding tables in torchsnapshots: list them, read one, write one, walk checkpoint folders.

the-algorithm-ml saves models with torchsnapshot (``common/checkpointing/snapshot.py``): one
snapshot per checkpoint in ``save_dir/<step>/``, taken with ``app_state={"model": model, ...}``,
finished when ``<step>/.snapshot_metadata`` exists (rank 0 writes it last, after every rank wrote
its data). A table's weight sits in the manifest under a path that ends in
``embedding_bags.<table>.weight`` (``0/model/large_embeddings.ebc.embedding_bags.user.weight`` for
TwHIN; ``module.`` is added when the model was wrapped in DistributedModelParallel).

Everything here reads the manifest only, except `read_table`, which reads exactly one tensor
through the checked reader of `embviz.snapshot_reader` (which also reads tables in bounded blocks:
`iter_table_blocks`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torchsnapshot import Snapshot

__all__ = [
    "METADATA_FILE",
    "SnapshotError",
    "checkpoints",
    "checkpoints_at",
    "read_table",
    "resolve_snapshot",
    "save_snapshot",
    "snapshot_tables",
]

# torchsnapshot's SNAPSHOT_METADATA_FNAME: written last, so its presence means "finished".
METADATA_FILE = ".snapshot_metadata"

# The key under which `save_snapshot` stores the module, as the-algorithm-ml does.
MODEL_KEY = "model"

# `embedding_bags.<name>.weight` at the end of a logical path; torchrec table names cannot contain
# dots (they are nn.ModuleDict keys), so the name is everything between the two fixed parts.
_TABLE_PATH = re.compile(r"(?:^|[./])embedding_bags\.(?P<name>[^./]+)\.weight$")


class SnapshotError(EmbvizError, LookupError):
    """A snapshot that is missing, unfinished, unreadable, or lacks the table asked for."""


@dataclass(frozen=True)
class _TableEntry:
    """Where one table sits in a snapshot and what it holds (from the manifest alone)."""

    name: str
    path: str  # manifest key, e.g. "0/model/ebc.embedding_bags.user.weight"
    shape: tuple[int, ...]
    dtype: str  # "float32"
    entry: Any  # torchsnapshot manifest entry


# Prefixes of local snapshot paths: embviz's ``file://`` and torchsnapshot's own ``fs://``.
_LOCAL_PREFIXES = ("file://", "fs://")


def _is_uri(path: str) -> bool:
    """A remote snapshot (``s3://``, ``gs://``, a registered torchsnapshot storage plugin)."""
    return "://" in path and not path.startswith(_LOCAL_PREFIXES)


def _local_text(path: str) -> str:
    for prefix in _LOCAL_PREFIXES:
        if path.startswith(prefix):
            return path.removeprefix(prefix)
    return path


def _finished_steps(folder: Path) -> list[int]:
    steps = []
    for child in folder.iterdir():
        if child.name.isdigit() and (child / METADATA_FILE).is_file():
            steps.append(int(child.name))
    return sorted(steps)


def _open(path: str | os.PathLike[str]) -> Snapshot:
    """A `Snapshot` whose metadata has been read, or a `SnapshotError` saying why not."""
    from torchsnapshot import Snapshot

    text = str(path)
    if not _is_uri(text):
        local = Path(_local_text(text))
        if not local.exists():
            raise SnapshotError(f"{text}: no such snapshot (the path does not exist)")
        if not local.is_dir():
            raise SnapshotError(f"{text}: not a torchsnapshot (a snapshot is a folder, not a file)")
        if not (local / METADATA_FILE).is_file():
            steps = _finished_steps(local)
            if steps:
                shown = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
                raise SnapshotError(
                    f"{text}: a checkpoint folder (finished steps: {shown}), not one snapshot; "
                    f"pass one step's folder, e.g. {local / str(steps[-1])}"
                )
            has_data = any(local.iterdir())
            why = (
                "unfinished or not a snapshot: it has files but no "
                if has_data
                else "not a snapshot: the folder is empty, there is no "
            )
            raise SnapshotError(f"{text}: {why}{METADATA_FILE} (torchsnapshot writes it last)")
        text = str(local)
    snapshot = Snapshot(path=text)
    try:
        metadata = snapshot.metadata
    except FileNotFoundError as exc:
        raise SnapshotError(f"{text}: no {METADATA_FILE}: {exc}") from None
    except Exception as exc:  # yaml/json errors, missing keys: torchsnapshot gives no typed error
        raise SnapshotError(
            f"{text}: corrupt snapshot: cannot read {METADATA_FILE} ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(getattr(metadata, "manifest", None), dict):
        raise SnapshotError(f"{text}: corrupt snapshot: {METADATA_FILE} has no manifest")
    return snapshot


def _entry_shape_dtype(label: str, name: str, entry: Any) -> tuple[tuple[int, ...], str] | None:
    """Global shape and dtype of a tensor entry, checked, or None for anything else.

    Shapes must hold non-negative integers whose bytes fit in int64, and the dtype must be one
    the reader knows; otherwise a `SnapshotError` names ``.snapshot_metadata``.
    """
    from torchsnapshot.manifest import ChunkedTensorEntry, ShardedTensorEntry, TensorEntry

    from embviz.snapshot_reader import check_entry_shape_dtype, check_shape

    if isinstance(entry, (TensorEntry, ChunkedTensorEntry)):
        dtype = str(entry.dtype)
        shape = check_entry_shape_dtype(label, name, entry.shape, dtype)
        return shape, dtype.removeprefix("torch.")
    if isinstance(entry, ShardedTensorEntry) and entry.shards:
        # The global shape is where the furthest shard ends, dimension by dimension.
        ends = []
        for shard in entry.shards:
            offsets = check_shape(label, name, shard.offsets, "shard offsets")
            sizes = check_shape(label, name, shard.sizes, "shard sizes")
            if len(offsets) != len(sizes):
                raise SnapshotError(
                    f"{label.rstrip('/')}/{METADATA_FILE}: table {name!r}: a shard has offsets "
                    f"{list(offsets)} but sizes {list(sizes)}"
                )
            ends.append(tuple(o + n for o, n in zip(offsets, sizes, strict=True)))
        ndim = len(ends[0])
        if any(len(e) != ndim for e in ends):
            raise SnapshotError(
                f"{label.rstrip('/')}/{METADATA_FILE}: table {name!r}: its shards have different "
                "numbers of dimensions"
            )
        shape = tuple(max(e[d] for e in ends) for d in range(ndim))
        dtype = str(entry.shards[0].tensor.dtype)
        shape = check_entry_shape_dtype(label, name, list(shape), dtype)
        return shape, dtype.removeprefix("torch.")
    return None


def _table_entries(snapshot: Snapshot, label: str) -> dict[str, _TableEntry]:
    """Every ``...embedding_bags.<name>.weight`` tensor of the snapshot, by table name.

    Entries of every rank are merged the way `Snapshot.read_object` sees them from rank 0:
    sharded tensors are put together from all ranks' shards. When two modules of the model hold
    a table with the same name, both are listed under their full logical paths instead.
    """
    from torchsnapshot.manifest_ops import get_manifest_for_rank

    try:
        manifest, merged_sharded = get_manifest_for_rank(metadata=snapshot.metadata, rank=0)
    except Exception as exc:  # a hostile manifest breaks torchsnapshot in untyped ways
        raise SnapshotError(
            f"{label.rstrip('/')}/{METADATA_FILE}: corrupt manifest ({type(exc).__name__}: {exc})"
        ) from None
    logical = {**manifest, **merged_sharded}
    found: dict[str, list[_TableEntry]] = {}
    for logical_path, entry in logical.items():
        match = _TABLE_PATH.search(logical_path)
        if match is None:
            continue
        name = match.group("name")
        shape_dtype = _entry_shape_dtype(label, name, entry)
        if shape_dtype is None:
            continue
        shape, dtype = shape_dtype
        found.setdefault(name, []).append(
            _TableEntry(name, f"0/{logical_path}", shape, dtype, entry)
        )
    tables: dict[str, _TableEntry] = {}
    for name, entries in found.items():
        if len(entries) == 1:
            tables[name] = entries[0]
        else:
            for item in entries:
                full = item.path.split("/", 1)[1]
                tables[full] = _TableEntry(full, item.path, item.shape, item.dtype, item.entry)
    return tables


def snapshot_tables(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The embedding tables of a torchsnapshot, read from its manifest without reading tensors.

    Parameters
    ----------
    path : str or path-like
        Folder of one finished snapshot (``save_dir/<step>``), or a URI torchsnapshot reads.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table`` (the ``<name>`` of a manifest path ending in
        ``embedding_bags.<name>.weight``, whatever module prefix precedes it; the full logical
        path when two modules hold tables with the same name), in manifest order, with columns
        ``path`` (manifest key, for `torchsnapshot.Snapshot.read_object`), ``shape`` (tuple),
        ``rows``, ``dim``, ``dtype`` (``"float32"``, ``"float16"``...), ``bytes``.

    Raises
    ------
    SnapshotError
        Missing path, a file, an unfinished or corrupt snapshot, or one without any table.
    """
    import pandas as pd

    snapshot = _open(path)
    tables = _table_entries(snapshot, str(path))
    if not tables:
        raise SnapshotError(
            f"{path}: no embedding tables in this snapshot (no manifest path ends in "
            "'embedding_bags.<name>.weight')"
        )
    rows = []
    for name, item in tables.items():
        rows.append(
            {
                "table": name,
                "path": item.path,
                "shape": item.shape,
                "rows": item.shape[0] if item.shape else 0,
                "dim": item.shape[1] if len(item.shape) > 1 else 1,
                "dtype": item.dtype,
                "bytes": _numel(item.shape) * _itemsize(item.dtype),
            }
        )
    return pd.DataFrame(rows).set_index("table")


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def _itemsize(dtype: str) -> int:
    from embviz.snapshot_reader import itemsize

    return itemsize(dtype)


def _find(path: str | os.PathLike[str], name: str) -> tuple[Snapshot, _TableEntry]:
    snapshot = _open(path)
    tables = _table_entries(snapshot, str(path))
    if name in tables:
        return snapshot, tables[name]
    # A full logical path or manifest key is accepted too.
    for item in tables.values():
        if name in (item.path, item.path.split("/", 1)[1]):
            return snapshot, item
    known = ", ".join(repr(n) for n in tables) or "none"
    raise SnapshotError(f"{path}: no table {name!r} in this snapshot (tables: {known})")


def table_info(path: str | os.PathLike[str], name: str) -> tuple[str, tuple[int, ...], str]:
    """``(manifest path, shape, dtype)`` of one table, from the manifest (see `read_table`)."""
    _, item = _find(path, name)
    return item.path, item.shape, item.dtype


def read_table(
    path: str | os.PathLike[str], name: str, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Read one table's weight from a snapshot, and nothing else.

    Parameters
    ----------
    path : str or path-like
        Folder of one finished snapshot.
    name : str
        Table name as `snapshot_tables` lists it (or its manifest path).
    out : torch.Tensor, optional
        Tensor to read into in place (any device), e.g. a collection's weight; it must have the
        table's shape and dtype. By default a new CPU tensor is returned.

    Returns
    -------
    torch.Tensor
        ``out``, or a new CPU tensor of the table's shape and dtype.

    Raises
    ------
    SnapshotError
        Unknown name (the message lists the tables), ``out`` of another shape or dtype (both
        shown), a snapshot that is missing or unfinished, or anything the checked reader finds
        wrong (`embviz.snapshot_reader`): a location outside the snapshot folder, a missing,
        truncated or emptied data file, a manifest shape the data does not hold, an unknown
        dtype or serializer, a failed read. The message names the file.
    """
    from embviz.snapshot_reader import read_into

    return read_into(path, name, out)


def save_snapshot(
    module: torch.nn.Module, path: str | os.PathLike[str], *, step: int | None = None
) -> Path:
    """Write a module's state dict as a torchsnapshot, laid out as the-algorithm-ml does.

    ``Snapshot.take(path, {"model": module})``: a collection's tables end up under
    ``0/model/embedding_bags.<name>.weight``, a model holding one under
    ``0/model/<attribute path>.embedding_bags.<name>.weight``; both are found by
    `snapshot_tables` and `read_table`, and by a table config's ``pretrained``.

    Parameters
    ----------
    module : torch.nn.Module
        An `EmbeddingBagCollection` or any module holding one.
    path : str or path-like
        Folder to create; it must not exist or be empty (torchsnapshot never overwrites).
    step : int, optional
        Also store ``extra_state = {"step": step}``, as the-algorithm-ml's checkpoints do.

    Returns
    -------
    pathlib.Path
        The snapshot folder.

    Raises
    ------
    SnapshotError
        When ``path`` is a file or a folder that is not empty.
    """
    from torchsnapshot import Snapshot, StateDict

    folder = Path(path)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "a file" if not folder.is_dir() else "a folder that is not empty"
        raise SnapshotError(f"{folder}: cannot write a snapshot here, it is {what}")
    app_state: dict[str, Any] = {MODEL_KEY: module}
    if step is not None:
        app_state["extra_state"] = StateDict(step=int(step))
    Snapshot.take(path=str(folder), app_state=app_state)
    return folder


def checkpoints(save_dir: str | os.PathLike[str], *, unfinished: bool = False) -> pd.DataFrame:
    """The finished checkpoints of a training run, in step order.

    the-algorithm-ml writes checkpoint ``N`` to ``save_dir/N/`` and treats it as written only once
    ``save_dir/N/.snapshot_metadata`` exists (its ``get_checkpoints``), because torchsnapshot
    writes that file last, after every rank has written its data. Folders without it are being
    written or were cut short: they are left out, or with ``unfinished=True`` listed with
    ``finished`` False. Entries whose name is not a number (e.g. a ``vocab`` folder beside the
    checkpoints) are never listed.

    Parameters
    ----------
    save_dir : str or path-like
        The run's ``save_dir``.
    unfinished : bool
        Also list the step folders without ``.snapshot_metadata``.

    Returns
    -------
    pandas.DataFrame
        Columns ``step`` (int), ``path`` (str) and ``finished`` (bool), sorted by step: the
        finished checkpoints (``finished`` all True), or with ``unfinished=True`` every step
        folder.

    Raises
    ------
    SnapshotError
        When ``save_dir`` does not exist, is not a folder, or holds no finished checkpoint.
    """
    import pandas as pd

    folder = Path(save_dir)
    if not folder.exists():
        raise SnapshotError(f"{folder}: no such checkpoint folder")
    if not folder.is_dir():
        raise SnapshotError(f"{folder}: not a folder (expected save_dir with <step>/ snapshots)")
    if (folder / METADATA_FILE).is_file():
        raise SnapshotError(
            f"{folder}: a single snapshot, not a checkpoint folder (expected save_dir/<step>/); "
            "use snapshot_tables on it"
        )
    found: list[tuple[int, str, bool]] = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.isdigit():
            found.append((int(child.name), str(child), (child / METADATA_FILE).is_file()))
    found.sort()
    if not any(done for _, _, done in found):
        extra = f" ({len(found)} unfinished step folders)" if found else ""
        raise SnapshotError(
            f"{folder}: no finished checkpoints (expected <step>/ folders holding a "
            f"{METADATA_FILE}){extra}"
        )
    if not unfinished:
        found = [entry for entry in found if entry[2]]
    frame = pd.DataFrame(
        {
            "step": pd.Series([s for s, _, _ in found], dtype="int64"),
            "path": [p for _, p, _ in found],
            "finished": pd.Series([done for _, _, done in found], dtype=bool),
        }
    )
    return frame


def checkpoints_at(
    save_dir: str | os.PathLike[str], steps: Iterable[int] | None = None
) -> pd.DataFrame:
    """`checkpoints` of ``save_dir``, only those at ``steps`` when given (every one must exist).

    Raises
    ------
    SnapshotError
        A step with no finished checkpoint, naming it and the steps there are.
    """
    frame = checkpoints(save_dir)
    if steps is None:
        return frame
    wanted = [int(s) for s in steps]
    missing = sorted(set(wanted) - set(frame["step"]))
    if missing:
        known = ", ".join(str(s) for s in frame["step"])
        raise SnapshotError(
            f"{save_dir}: no finished checkpoint at step {missing[0]} (steps: {known})"
        )
    return frame[frame["step"].isin(wanted)]


def resolve_snapshot(path: str | os.PathLike[str], step: int | None = None) -> str:
    """One snapshot folder from a snapshot or a checkpoint folder (``save_dir/<step>/``).

    A checkpoint folder gives its latest finished step, or ``step``. Raises `SnapshotError`
    (missing path, no finished checkpoint, unknown step, listing the steps there are).
    """
    text = os.fspath(path)
    if os.path.isfile(os.path.join(text, METADATA_FILE)):
        if step is not None:
            raise SnapshotError(
                f"{text}: a single snapshot; --step/step only applies to a checkpoint folder"
            )
        return text
    # A checkpoint folder holds finished <step>/ snapshots. (A snapshot's own rank folders are
    # numbered too, so digits alone do not make one: an unfinished snapshot has "0/".)
    finished = os.path.isdir(text) and any(
        name.isdigit() and os.path.isfile(os.path.join(text, name, METADATA_FILE))
        for name in os.listdir(text)
    )
    if not finished:
        # Let the snapshot reader say what is wrong with it (missing, unfinished, a file...).
        snapshot_tables(text)
        return text
    frame = checkpoints(text)
    if step is None:
        return str(frame["path"].iloc[-1])
    match = frame[frame["step"] == int(step)]
    if match.empty:
        steps = ", ".join(str(s) for s in frame["step"])
        raise SnapshotError(f"{text}: no finished checkpoint at step {step} (steps: {steps})")
    return str(match["path"].iloc[0])

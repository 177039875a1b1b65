"""The checked, streaming reader of tables in torchsnapshots.

torchsnapshot's own ``read_object`` reads in background tasks whose failures are only logged
("Task exception was never retrieved"), and fills a ``torch.empty`` buffer: a truncated or emptied
data file then reads as zeros or left-over memory. This module reads the stored files itself,
from the manifest, and checks every piece before using it:

- the manifest entry: a tensor, sharded tensor or chunked tensor; shapes made of non-negative
  integers whose byte count fits in int64; a dtype it knows; a serializer it can verify
  (``buffer_protocol``, ``torch_save``); shards and chunks that tile the table exactly, each of
  the table's dtype;
- the location: resolved inside the snapshot folder (after resolving the folder itself, so a
  symlinked checkpoint folder still works): no ``..``, absolute path or symlink leads out of it;
  remote snapshots (``s3://``, ``gs://``, registered torchsnapshot storage plugins) take plain
  relative locations only;
- the data: a regular file, whose size covers the byte range, and a byte range of exactly
  ``numel x itemsize`` bytes (``torch_save`` pieces: a tensor of exactly the manifest's shape and
  dtype);
- every read: short reads and I/O errors are raised, never logged.

Anything short raises `SnapshotError` naming the file (the data file, or ``.snapshot_metadata``
for the manifest) and what is wrong with it.

Local data is memory-mapped block by block (``max_bytes`` each, 64 MiB by default; private
maps, so writing to a block never changes the file) and unmapped when the block is dropped: a
table of any size is read with a bounded amount of memory, with no copy of the data (the page
cache's pages are mapped as they are). A data file truncated by another process *while* it is
being read can still end the process with SIGBUS, as with any memory map.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from embviz.snapshots import METADATA_FILE, SnapshotError, _find, _is_uri, _local_text

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "iter_table_blocks",
    "iter_table_pieces",
    "table_pieces",
    "table_shape",
]

# Bytes of one block a reader holds at a time (its memory bound), by default.
DEFAULT_BLOCK_BYTES = 64 * 2**20

# Entry dtypes the reader knows, with their sizes (torchsnapshot's buffer-protocol dtypes).
_DTYPES = {
    "torch.float64": ("float64", 8),
    "torch.float32": ("float32", 4),
    "torch.float16": ("float16", 2),
    "torch.bfloat16": ("bfloat16", 2),
    "torch.int64": ("int64", 8),
    "torch.int32": ("int32", 4),
    "torch.int16": ("int16", 2),
    "torch.int8": ("int8", 1),
    "torch.uint8": ("uint8", 1),
    "torch.bool": ("bool", 1),
}
_SERIALIZERS = ("buffer_protocol", "torch_save")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Piece:
    """One stored tensor of a table: a whole table, one chunk, or one shard (of any rank).

    ``offsets`` and ``sizes`` place it in the table (rows, columns); ``file`` is the checked
    data file (a local path, or the location under a remote snapshot's root) and ``start`` the
    byte where its data begins (``nbytes`` of them; for ``torch_save``, the stored bytes).
    """

    offsets: tuple[int, int]
    sizes: tuple[int, int]
    file: str
    start: int
    nbytes: int
    serializer: str


@dataclass(frozen=True)
class _Plan:
    label: str  # the snapshot path as given
    name: str  # table name
    shape: tuple[int, int]
    dtype: str  # "float32"
    itemsize: int
    pieces: tuple[Piece, ...]
    remote: Any  # torchsnapshot StoragePlugin for remote snapshots, else None


def _metadata_file(label: str) -> str:
    return f"{label.rstrip('/')}/{METADATA_FILE}"


def _manifest_error(plan_label: str, name: str, what: str) -> SnapshotError:
    return SnapshotError(f"{_metadata_file(plan_label)}: table {name!r}: {what}")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def check_shape(label: str, name: str, shape: Any, what: str = "shape") -> tuple[int, ...]:
    """A shape of non-negative ints, as a tuple, or a `SnapshotError` about the manifest."""
    if not isinstance(shape, list | tuple):
        raise _manifest_error(label, name, f"{what} {shape!r} is not a list of sizes")
    dims = [_as_int(n) for n in shape]
    if any(n is None or n < 0 for n in dims):
        raise _manifest_error(label, name, f"{what} {list(shape)} must hold non-negative integers")
    total = 1
    for n in dims:
        total *= n  # type: ignore[operator]
    if total * 8 > _INT64_MAX:
        raise _manifest_error(label, name, f"{what} {list(shape)} is impossibly large")
    return tuple(dims)  # type: ignore[arg-type]


def _check_dtype(label: str, name: str, dtype: Any) -> tuple[str, int]:
    if dtype not in _DTYPES:
        raise _manifest_error(
            label, name, f"unknown dtype {dtype!r} (known: {', '.join(sorted(_DTYPES))})"
        )
    return _DTYPES[dtype]


def itemsize(dtype: str) -> int:
    """Bytes of one element of a dtype the reader knows (``"float32"`` or ``"torch.float32"``)."""
    return _DTYPES["torch." + dtype.removeprefix("torch.")][1]


def check_entry_shape_dtype(label: str, name: str, shape: Any, dtype: Any) -> tuple[int, ...]:
    """Check a listed table's shape and dtype (used by `snapshot_tables`)."""
    _check_dtype(label, name, "torch." + str(dtype).removeprefix("torch."))
    return check_shape(label, name, shape)


# --------------------------------------------------------------------------- locations


def _local_root(label: str) -> Path:
    return Path(_local_text(label)).resolve(strict=True)


def _resolve_local(root: Path, label: str, name: str, location: Any) -> Path:
    """The data file of ``location``, resolved, inside ``root``; else a `SnapshotError`."""
    if not isinstance(location, str) or not location:
        raise _manifest_error(label, name, f"location {location!r} is not a file name")
    if "\x00" in location:
        raise _manifest_error(label, name, f"location {location!r} holds a NUL byte")
    target = root / location
    try:
        resolved = target.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise SnapshotError(f"{target}: cannot resolve the data file of {name!r} ({exc})") from None
    if not resolved.is_relative_to(root):
        raise _manifest_error(
            label,
            name,
            f"location {location!r} leads outside the snapshot folder (to {resolved}); refused",
        )
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise SnapshotError(
            f"{target}: data file of table {name!r} is missing (the snapshot is incomplete or "
            "damaged)"
        ) from None
    except OSError as exc:
        raise SnapshotError(f"{target}: cannot read the data of table {name!r} ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SnapshotError(f"{target}: data of table {name!r} is not a regular file")
    return resolved


def _check_remote_location(label: str, name: str, location: Any) -> str:
    """A remote location: a plain relative path with no ``..``, ``.`` or empty parts."""
    if not isinstance(location, str) or not location:
        raise _manifest_error(label, name, f"location {location!r} is not a file name")
    parts = PurePosixPath(location).parts
    bad = (
        location.startswith(("/", "\\"))
        or "://" in location
        or "\\" in location
        or "\x00" in location
        or any(p in ("..", ".") for p in location.split("/"))
        or not parts
    )
    if bad:
        raise _manifest_error(
            label, name, f"location {location!r} leads outside the snapshot; refused"
        )
    return location


# --------------------------------------------------------------------------- planning


def _plan(path: str | os.PathLike[str], name: str) -> _Plan:
    """Every piece of one table, checked against the manifest and the files, before any read."""
    from torchsnapshot.manifest import ChunkedTensorEntry, ShardedTensorEntry, TensorEntry

    snapshot, item = _find(path, name)
    label = os.fspath(path)
    entry = item.entry
    if isinstance(entry, TensorEntry):
        parts = [([0] * len(_as_list(entry.shape)), _as_list(entry.shape), entry)]
        table_shape, table_dtype = entry.shape, entry.dtype
    elif isinstance(entry, ChunkedTensorEntry):
        parts = [(c.offsets, c.sizes, c.tensor) for c in entry.chunks]
        table_shape, table_dtype = entry.shape, entry.dtype
    elif isinstance(entry, ShardedTensorEntry):
        parts = [(s.offsets, s.sizes, s.tensor) for s in entry.shards]
        table_shape, table_dtype = (
            list(item.shape),
            (entry.shards[0].tensor.dtype if entry.shards else None),
        )
    else:  # _table_entries lists tensors only
        raise _manifest_error(label, item.name, f"a {type(entry).__name__}, not a tensor")
    shape = check_shape(label, item.name, table_shape)
    if len(shape) != 2:
        raise _manifest_error(
            label, item.name, f"shape {list(shape)} is not 2-D (rows x dim) like a table"
        )
    dtype, itemsize = _check_dtype(label, item.name, table_dtype)

    remote = None
    root = None
    if _is_uri(label):
        from torchsnapshot.storage_plugin import url_to_storage_plugin

        remote = url_to_storage_plugin(label)
    else:
        root = _local_root(label)

    pieces = []
    for offsets, sizes, tensor in parts:
        off = check_shape(label, item.name, offsets, "offsets")
        size = check_shape(label, item.name, sizes, "piece sizes")
        stored = check_shape(label, item.name, getattr(tensor, "shape", None), "piece shape")
        if len(off) != 2 or len(size) != 2 or stored != size:
            raise _manifest_error(
                label,
                item.name,
                f"a piece at offsets {list(off)} has sizes {list(size)} but stores shape "
                f"{list(stored)}",
            )
        if off[0] + size[0] > shape[0] or off[1] + size[1] > shape[1]:
            raise _manifest_error(
                label,
                item.name,
                f"a piece at offsets {list(off)} of sizes {list(size)} lies outside the table's "
                f"shape {list(shape)}",
            )
        piece_dtype, _ = _check_dtype(label, item.name, tensor.dtype)
        if piece_dtype != dtype:
            raise _manifest_error(label, item.name, f"a piece is {piece_dtype}, the table {dtype}")
        serializer = tensor.serializer
        if serializer not in _SERIALIZERS:
            where = tensor.location if isinstance(tensor.location, str) else "?"
            raise SnapshotError(
                f"{label.rstrip('/')}/{where}: table {item.name!r} is stored with serializer "
                f"{serializer!r}; this reader verifies only {', '.join(_SERIALIZERS)}"
            )
        if remote is not None:
            file = _check_remote_location(label, item.name, tensor.location)
            file_size = None
        else:
            assert root is not None
            resolved = _resolve_local(root, label, item.name, tensor.location)
            file = str(resolved)
            file_size = resolved.stat().st_size
        start, nbytes = _byte_range(
            label, item.name, file, tensor.byte_range, file_size, size, itemsize, serializer
        )
        pieces.append(Piece((off[0], off[1]), (size[0], size[1]), file, start, nbytes, serializer))
    _check_tiling(label, item.name, shape, pieces)
    del snapshot
    return _Plan(label, item.name, (shape[0], shape[1]), dtype, itemsize, tuple(pieces), remote)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else value


def _byte_range(
    label: str,
    name: str,
    file: str,
    byte_range: Any,
    file_size: int | None,
    sizes: tuple[int, ...],
    itemsize: int,
    serializer: str,
) -> tuple[int, int]:
    """(start, length) of a piece's bytes, checked against the file and the manifest's shape."""
    expected = math.prod(sizes) * itemsize
    shown = file if file_size is not None else f"{label.rstrip('/')}/{file}"
    if byte_range is None:
        start = 0
        if file_size is None:  # remote: the object's size is checked when it is read
            length = expected if serializer == "buffer_protocol" else -1
        else:
            length = file_size
    else:
        pair = byte_range if isinstance(byte_range, list | tuple) else ()
        ends = [_as_int(v) for v in pair]
        if len(ends) != 2 or ends[0] is None or ends[1] is None or not 0 <= ends[0] <= ends[1]:
            raise _manifest_error(label, name, f"byte range {byte_range!r} of {file} is invalid")
        start, length = ends[0], ends[1] - ends[0]
        if file_size is not None and ends[1] > file_size:
            raise SnapshotError(
                f"{shown}: holds {file_size:,} bytes, but table {name!r} needs bytes "
                f"{ends[0]:,} to {ends[1]:,} of it (the file is truncated or the manifest is "
                "wrong)"
            )
    if serializer == "buffer_protocol" and length != expected:
        shape_text = " x ".join(map(str, sizes))
        raise SnapshotError(
            f"{shown}: holds {length:,} bytes for table {name!r}, but its manifest shape "
            f"{shape_text} at {itemsize} bytes an element needs {expected:,} (the file is "
            "truncated, emptied or overwritten, or the manifest is wrong)"
        )
    return start, length


def _check_tiling(label: str, name: str, shape: tuple[int, ...], pieces: list[Piece]) -> None:
    """The pieces cover the table exactly once: every row band's pieces tile all columns."""
    rows, cols = shape
    for lo, hi, band in _bands(pieces, rows):
        at = 0
        for a, b in sorted((p.offsets[1], p.offsets[1] + p.sizes[1]) for p in band):
            if a < at:
                raise _manifest_error(
                    label, name, f"its pieces overlap in rows {lo:,} to {hi:,}, columns {a} to {at}"
                )
            if a > at:
                break
            at = b
        if at != cols:
            raise _manifest_error(
                label,
                name,
                f"its pieces leave a gap: rows {lo:,} to {hi:,} from column {at} (of {cols}) "
                "are in no piece",
            )


def _bands(
    pieces: list[Piece] | tuple[Piece, ...], rows: int
) -> list[tuple[int, int, list[Piece]]]:
    """Row bands ``[lo, hi)`` over which the same pieces hold the rows, with those pieces."""
    cuts = sorted(
        {0, rows} | {p.offsets[0] for p in pieces} | {p.offsets[0] + p.sizes[0] for p in pieces}
    )
    out = []
    for lo, hi in itertools.pairwise(cuts):
        if hi <= lo:
            continue
        band = [
            p
            for p in pieces
            if p.offsets[0] <= lo and p.offsets[0] + p.sizes[0] >= hi and p.sizes[1] > 0
        ]
        out.append((lo, hi, band))
    return out


# --------------------------------------------------------------------------- reading


class _Reader:
    """Reads rows of one piece: memory maps for local files, ranged reads for remote ones."""

    def __init__(self, plan: _Plan, reuse: bool = False):
        self.plan = plan
        self.reuse = reuse
        self._loaded: dict[Piece, torch.Tensor] = {}  # torch_save pieces, loaded whole
        self._buffers: dict[str, torch.Tensor] = {}  # reuse: byte buffers, grown as needed

    def empty(self, shape: tuple[int, int], role: str = "block") -> torch.Tensor:
        """A tensor of the table's dtype: new, or (``reuse``) a view of this reader's buffer."""
        import torch

        dtype = getattr(torch, self.plan.dtype)
        if not self.reuse:
            return torch.empty(shape, dtype=dtype)
        nbytes = shape[0] * shape[1] * self.plan.itemsize
        buf = self._buffers.get(role)
        if buf is None or buf.numel() < nbytes:
            buf = self._buffers[role] = torch.empty(nbytes, dtype=torch.uint8)
        return buf[:nbytes].view(dtype).view(shape)

    def rows(self, piece: Piece, r0: int, r1: int) -> torch.Tensor:
        """Rows ``[r0, r1)`` of the piece (relative to the piece) as a CPU tensor."""
        import torch

        if piece.serializer == "torch_save":
            return self._torch_save(piece)[r0:r1]
        dtype = getattr(torch, self.plan.dtype)
        row_bytes = piece.sizes[1] * self.plan.itemsize
        begin = piece.start + r0 * row_bytes
        length = (r1 - r0) * row_bytes
        shape = (r1 - r0, piece.sizes[1])
        if length == 0:
            return torch.empty(shape, dtype=dtype)
        if self.plan.remote is not None:
            buf = self._remote_read(piece.file, begin, length)
            return torch.frombuffer(bytearray(buf), dtype=dtype).view(shape)
        return _map(piece.file, begin, length, dtype).view(shape)

    def _torch_save(self, piece: Piece) -> torch.Tensor:
        import torch

        if piece in self._loaded:
            return self._loaded[piece]
        shown = piece.file if self.plan.remote is None else f"{self.plan.label}/{piece.file}"
        try:
            if (
                self.plan.remote is None
                and piece.start == 0
                and piece.nbytes == os.path.getsize(piece.file)
            ):
                loaded = torch.load(piece.file, mmap=True, weights_only=True, map_location="cpu")
            else:
                if self.plan.remote is None:
                    with open(piece.file, "rb") as f:
                        f.seek(piece.start)
                        data = _read_exact(f, piece.nbytes, piece.file)
                else:
                    data = self._remote_read(piece.file, piece.start, piece.nbytes)
                loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except SnapshotError:
            raise
        except Exception as exc:  # torch.load raises many untyped errors on damaged bytes
            raise SnapshotError(
                f"{shown}: cannot load table {self.plan.name!r} (torch_save: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        want = torch.Size(piece.sizes)
        if (
            not isinstance(loaded, torch.Tensor)
            or loaded.shape != want
            or str(loaded.dtype).removeprefix("torch.") != self.plan.dtype
        ):
            got = (
                f"{list(loaded.shape)} {str(loaded.dtype).removeprefix('torch.')}"
                if isinstance(loaded, torch.Tensor)
                else type(loaded).__name__
            )
            raise SnapshotError(
                f"{shown}: holds {got} for table {self.plan.name!r}, the manifest says "
                f"{list(piece.sizes)} {self.plan.dtype}"
            )
        self._loaded = {piece: loaded}  # one at a time
        return loaded

    def _remote_read(self, location: str, begin: int, length: int) -> bytes:
        from torchsnapshot.io_types import ReadIO

        byte_range = None if length < 0 else (begin, begin + length)
        read_io = ReadIO(path=location, byte_range=byte_range)
        shown = f"{self.plan.label.rstrip('/')}/{location}"
        try:
            asyncio.run(self.plan.remote.read(read_io))
        except Exception as exc:  # storage plugins raise anything (botocore, google, OSError)
            raise SnapshotError(
                f"{shown}: cannot read table {self.plan.name!r} ({type(exc).__name__}: {exc})"
            ) from None
        data = read_io.buf.getvalue()
        if length >= 0 and len(data) != length:
            raise SnapshotError(
                f"{shown}: read {len(data):,} bytes of table {self.plan.name!r} at byte "
                f"{begin:,}, expected {length:,} (the object is truncated or the manifest is wrong)"
            )
        return data


def _read_exact(f: Any, n: int, file: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SnapshotError(f"{file}: read {len(data):,} bytes, expected {n:,} (truncated)")
    return data


def _map(file: str, begin: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Bytes ``[begin, begin + length)`` of a file as a 1-D tensor over a private memory map.

    The map lives as long as the tensor (and is unmapped with it), so a reader that drops each
    block holds at most one block of the file in memory. Private (copy-on-write): writing to the
    tensor never changes the file.
    """
    import numpy as np
    import torch

    aligned = begin - begin % mmap.ALLOCATIONGRANULARITY
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if begin + length > size:  # changed since the plan was checked
                raise SnapshotError(
                    f"{file}: holds {size:,} bytes, a read needs bytes up to {begin + length:,} "
                    "(the file was truncated while being read)"
                )
            mapped = mmap.mmap(
                f.fileno(),
                length + (begin - aligned),
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=aligned,
            )
    except OSError as exc:
        raise SnapshotError(f"{file}: cannot read ({exc})") from None
    if hasattr(mmap, "MADV_SEQUENTIAL"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)
    array = np.frombuffer(mapped, dtype=np.uint8, count=length, offset=begin - aligned)
    return torch.from_numpy(array).view(dtype)


# --------------------------------------------------------------------------- public


def table_shape(path: str | os.PathLike[str], name: str) -> tuple[int, int]:
    """``(rows, dim)`` of one table, from the manifest (checked as `iter_table_blocks` does)."""
    return _plan(path, name).shape


def table_pieces(path: str | os.PathLike[str], name: str) -> list[Piece]:
    """The stored pieces of one table (whole tensor, chunks, or every rank's shards), checked.

    Raises `SnapshotError` as `iter_table_blocks` does, before anything is read.
    """
    return list(_plan(path, name).pieces)


def _positive(argument: str, value: Any) -> int:
    # (embviz.arguments would import the config schema, and pydantic with it, for one check.)
    from embviz.errors import ArgumentError

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(argument, f"must be an integer >= 1, got {value!r}")
    return value


def iter_table_blocks(
    path: str | os.PathLike[str],
    name: str,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    *,
    reuse: bool = False,
    progress: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """One table of a snapshot, in blocks of whole rows, checked, in row order.

    Parameters
    ----------
    path : str or path-like
        Folder of one finished snapshot (a local path, ``file://`` or ``fs://``), or a remote
        URI torchsnapshot reads (``s3://``, ``gs://``).
    name : str
        Table name as `embviz.snapshot_tables` lists it (or its manifest path).
    max_bytes : int
        Most bytes a block holds (at least one row): the memory the read holds at a time (plus
        one ``torch_save`` piece, for snapshots that store one that way).
    reuse : bool
        Put column-wise shards side by side in one reused buffer, for a caller that is done
        with each block before asking for the next (the next block overwrites it; copy what you
        keep). Default: a new tensor per such block. Other blocks map the file either way.
    progress : bool
        A tqdm progress bar over the table's bytes.

    Yields
    ------
    (int, torch.Tensor)
        First row of the block and the block: ``rows x dim`` in the table's dtype, on the CPU.
        Blocks of a snapshot of sharded tables are read shard by shard: a block never spans
        two row shards, and column-wise shards of the same rows are put side by side. Writing
        to a block never changes the snapshot.

    Raises
    ------
    SnapshotError
        Before the first block, for anything wrong in the manifest or the files' sizes (see the
        module docstring); while reading, for any failed or short read. The message names the
        file.
    """
    max_bytes = _positive("max_bytes", max_bytes)
    plan = _plan(path, name)
    return _blocks(plan, max_bytes, progress, reuse)


def _blocks(
    plan: _Plan, max_bytes: int, progress: bool, reuse: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    import torch
    from tqdm.auto import tqdm

    reader = _Reader(plan, reuse)
    rows, cols = plan.shape
    row_bytes = max(1, cols * plan.itemsize)
    step = max(1, max_bytes // row_bytes)
    bar = tqdm(
        total=rows * cols * plan.itemsize,
        desc=f"reading {plan.name}",
        unit="B",
        unit_scale=True,
        disable=not progress,
    )
    try:
        for lo, hi, band in _bands(plan.pieces, rows):
            band = sorted(band, key=lambda p: p.offsets[1])
            for r0 in range(lo, hi, step):
                r1 = min(hi, r0 + step)
                if len(band) == 1:
                    p = band[0]
                    block = reader.rows(p, r0 - p.offsets[0], r1 - p.offsets[0])
                else:
                    block = reader.empty((r1 - r0, cols))
                    for p in band:
                        part = reader.rows(p, r0 - p.offsets[0], r1 - p.offsets[0])
                        block[:, p.offsets[1] : p.offsets[1] + p.sizes[1]] = part
                        del part
                if cols == 0:
                    block = torch.empty((r1 - r0, 0), dtype=getattr(torch, plan.dtype))
                yield r0, block
                bar.update((r1 - r0) * cols * plan.itemsize)
                del block
    finally:
        bar.close()


def iter_table_pieces(
    path: str | os.PathLike[str],
    name: str,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    *,
    reuse: bool = False,
    progress: bool = False,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """One table, stored piece by stored piece (every rank's shards), in blocks of rows.

    Like `iter_table_blocks`, but column-wise shards are not put side by side: each block is
    rows of one stored piece. Yields ``(first row, first column, block)`` in the table's
    coordinates; the blocks of all pieces cover the table exactly once.
    """
    max_bytes = _positive("max_bytes", max_bytes)
    plan = _plan(path, name)
    return _piece_blocks(plan, max_bytes, progress, reuse)


def _piece_blocks(
    plan: _Plan, max_bytes: int, progress: bool, reuse: bool = False
) -> Iterator[tuple[int, int, torch.Tensor]]:
    from tqdm.auto import tqdm

    reader = _Reader(plan, reuse)
    bar = tqdm(
        total=plan.shape[0] * plan.shape[1] * plan.itemsize,
        desc=f"reading {plan.name}",
        unit="B",
        unit_scale=True,
        disable=not progress,
    )
    try:
        for p in plan.pieces:
            step = max(1, max_bytes // max(1, p.sizes[1] * plan.itemsize))
            for r0 in range(0, p.sizes[0], step):
                r1 = min(p.sizes[0], r0 + step)
                block = reader.rows(p, r0, r1)
                yield p.offsets[0] + r0, p.offsets[1], block
                bar.update(block.numel() * plan.itemsize)
                del block
    finally:
        bar.close()


def read_into(path: str | os.PathLike[str], name: str, out: torch.Tensor | None) -> torch.Tensor:
    """The whole table through the checked reader, into ``out`` (any device) or a new tensor."""
    import torch

    plan = _plan(path, name)
    dtype = getattr(torch, plan.dtype)
    if out is None:
        out = torch.empty(plan.shape, dtype=dtype)
    elif tuple(out.shape) != plan.shape or out.dtype != dtype:
        shown = " x ".join(map(str, plan.shape))
        got = " x ".join(map(str, out.shape))
        raise SnapshotError(
            f"{path}: table {plan.name!r} is {shown} {plan.dtype} in the snapshot, but the tensor "
            f"to load it into is {got} {str(out.dtype).removeprefix('torch.')}"
        )
    with torch.no_grad():
        for r0, block in _blocks(plan, DEFAULT_BLOCK_BYTES, False, reuse=True):
            out[r0 : r0 + block.shape[0]].copy_(block)
            del block
    return out

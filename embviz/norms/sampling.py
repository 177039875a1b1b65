"""Uniform row samples without a permutation of all rows, and exact quantiles at any size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from embviz.norms.errors import EmptyTableError, NormError

__all__ = ["exact_quantiles", "sample_rows"]


def sample_rows(num_rows: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` distinct rows of ``range(num_rows)``, uniformly at random, sorted (int64).

    Draws with ``torch.randint`` and keeps the distinct values, drawing again until there are at
    least ``k``, then keeps a uniform ``k``-subset of them: by symmetry the set of distinct draws
    is a uniformly random subset of its size, so the result is a uniform ``k``-subset. No
    permutation of all rows is made (the-algorithm-ml's ``randperm(num_rows)[:k]`` allocates
    ``8 * num_rows`` bytes and shuffles them all). When ``k > num_rows / 2`` the complement is
    drawn instead, so the expected number of draws stays below ``1.4 * k``. Sets of at most
    4,096 values are shuffled whole.

    Raises
    ------
    NormError
        Negative ``num_rows`` or ``k``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise NormError(f"sample must be a positive integer, got {k!r}")
    if num_rows < 0:
        raise NormError(f"num_rows must be >= 0, got {num_rows}")
    k, num_rows = int(k), int(num_rows)
    if k >= num_rows:
        return torch.arange(num_rows, dtype=torch.int64)
    return _subset(num_rows, k, torch.Generator().manual_seed(int(seed)))


# Sets up to this size are shuffled whole: a permutation of a few thousand ints costs nothing.
_SHUFFLE_MAX = 4096


def _subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """A uniform ``k``-subset of ``range(n)``, sorted; see `sample_rows`."""
    if k <= 0:
        return torch.empty(0, dtype=torch.int64)
    if k >= n:
        return torch.arange(n, dtype=torch.int64)
    if n <= _SHUFFLE_MAX:
        return torch.randperm(n, generator=generator)[:k].sort().values
    if k > n // 2:
        keep = torch.ones(n, dtype=torch.bool)
        keep[_subset(n, n - k, generator)] = False
        return keep.nonzero().flatten()
    have = torch.empty(0, dtype=torch.int64)
    while have.numel() < k:
        missing = k - have.numel()
        # A fresh draw is new with probability about 1 - have/n: draw a little more than needed.
        fresh_share = 1.0 - (have.numel() + missing) / n  # >= 1/2 here
        draws = torch.randint(0, n, (int(missing / fresh_share * 1.02) + 16,), generator=generator)
        have = torch.unique(torch.cat([have, draws]))
    surplus = have.numel() - k
    if surplus > 0:
        # Drop a uniform subset of the few surplus values: a smaller instance of the same draw.
        keep = torch.ones(have.numel(), dtype=torch.bool)
        keep[_subset(have.numel(), surplus, generator)] = False
        have = have[keep]
    return have


def exact_quantiles(
    values: torch.Tensor, q: Sequence[float], *, overwrite: bool = False
) -> torch.Tensor:
    """Quantiles of a 1-D float tensor, equal to ``torch.quantile(values, q)`` ('linear').

    torch.quantile sorts its input and refuses more than 16M elements; this finds the needed
    order statistics with ``numpy.partition`` (linear time, one copy of the values) and then
    interpolates exactly as torch does, in the values' dtype: rank ``q * (n - 1)``, the two
    neighbouring order statistics, and `torch.lerp` with weight ``rank - floor(rank)``. A NaN
    among the values makes every quantile NaN, as in torch.

    ``overwrite=True`` partitions ``values`` in place (a contiguous CPU tensor the caller no
    longer needs in its order) instead of a copy: no second copy of a large set of values.

    Returns
    -------
    torch.Tensor
        One value per entry of ``q``, in the dtype of ``values`` (float32 or float64), on the CPU.
    """
    v = values.detach().flatten().cpu()
    if v.dtype not in (torch.float32, torch.float64):
        raise NormError(f"quantiles need float32 or float64 values, got {v.dtype}")
    n = v.numel()
    if n == 0:
        raise EmptyTableError("quantiles of an empty set of values are undefined")
    qt = torch.as_tensor(list(q), dtype=v.dtype)
    if bool(((qt < 0) | (qt > 1)).any()):
        raise NormError(f"quantiles must lie in [0, 1], got {list(q)}")
    if bool(torch.isnan(v).any()):
        return torch.full_like(qt, float("nan"))
    # Same arithmetic as torch.quantile: ranks in the values' dtype. Beyond 2**24 values float32
    # ranks are not exact integers any more (torch refuses such inputs); use float64 ranks there.
    rank_dtype = v.dtype if n <= 2**24 else torch.float64
    ranks = qt.to(rank_dtype) * (n - 1)
    below = ranks.floor().to(torch.int64)
    above = ranks.ceil().to(torch.int64)
    weights = (ranks - below.to(rank_dtype)).to(v.dtype)
    kth = np.unique(torch.cat([below, above]).numpy())
    if overwrite and v.is_contiguous() and v.data_ptr() == values.data_ptr():
        ordered = v.numpy()
        ordered.partition(kth)
    else:
        ordered = np.partition(v.numpy(), kth)
    lo = torch.from_numpy(ordered[below.numpy()].copy())
    hi = torch.from_numpy(ordered[above.numpy()].copy())
    return torch.lerp(lo, hi, weights)

"""`project`: 2-D PCA coordinates of a sample of a table's rows."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch

from embviz.norms.errors import NormError, check_positive_int
from embviz.norms.labels import as_vocab, entity_labels
from embviz.norms.layout import as_table
from embviz.norms.sampling import sample_rows

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["project"]


def project(
    table: Any,
    n: int = 10_000,
    method: Literal["pca"] = "pca",
    seed: int = 0,
    vocab: Any = None,
) -> pd.DataFrame:
    """2-D PCA coordinates of a sample of rows, with their row ids and norms.

    Parameters
    ----------
    table : torch.Tensor or module with ``.weight``
        The table; at least 2 columns.
    n : int
        Rows to sample (`sample_rows`; all rows when the table has fewer).
    method : {"pca"}
        `torch.pca_lowrank` on the centred sample (with a few extra components for accuracy),
        seeded, so the same seed gives the same picture. Signs are fixed so the largest loading
        of each component is positive.
    seed : int
        Seeds the sample and the randomised PCA.
    vocab : optional
        As in `nearest`: adds an ``entity_id`` column (the first id mapped to each row).

    Returns
    -------
    pandas.DataFrame
        ``row``, [``entity_id``], ``x``, ``y``, ``norm`` (the row's L2 norm), in row order;
        ``attrs["explained_variance_ratio"]`` holds the share of the sample's variance along x
        and y, ``attrs["rows"]`` the table's rows.
    """
    import pandas as pd

    if method != "pca":
        raise NormError(f"method must be 'pca', got {method!r}")
    weight = as_table(table)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    n = check_positive_int("n", n)
    if cols < 2:
        raise NormError(f"a 2-D projection needs at least 2 columns, the table has {cols}")
    series = as_vocab(vocab, rows)
    ids = sample_rows(rows, n, seed)
    if ids.numel() < 3:
        raise NormError(f"a projection needs at least 3 rows, got {ids.numel()}")
    with torch.no_grad():
        x = weight.index_select(0, ids.to(weight.device)).to(torch.float32).cpu()
        norms = torch.linalg.vector_norm(x, dim=1)
        centred = x - x.mean(dim=0, keepdim=True)
        q = min(cols, ids.numel(), 2 + 8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(centred, q=q, center=False, niter=6)
        components = v[:, :2]
        # Fix the sign: the loading largest in magnitude is positive.
        pivot = components.abs().argmax(dim=0)
        signs = torch.sign(components[pivot, torch.arange(2)])
        signs[signs == 0] = 1
        components = components * signs
        coords = centred @ components
        total = float(centred.square().sum())
        explained = (s[:2].square() / total).tolist() if total > 0 else [math.nan, math.nan]
    data: dict[str, Any] = {"row": ids.numpy()}
    if series is not None:
        data["entity_id"] = entity_labels(series, ids.numpy())
    data.update({"x": coords[:, 0].numpy(), "y": coords[:, 1].numpy(), "norm": norms.numpy()})
    frame = pd.DataFrame(data)
    frame.attrs.update({"explained_variance_ratio": explained, "rows": rows, "method": method})
    return frame

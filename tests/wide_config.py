"""A realistic wide config for tests and benchmarks: thousands of sparse features.

Ranking models have hundreds to a few thousand sparse features. `wide_config` makes ``n``
tables with what such a model looks like: a few huge id tables (users, items, authors:
10^7-10^8 rows), many mid-sized categorical and hashed features, and a long tail of small
ones (countries, devices, buckets: 10-10^4 rows); dims 4-256 (multiples of 4, larger for larger
tables); mostly fp32 with a fifth fp16; Adagrad for most, Adam and SGD (some with momentum) for
the rest, a few with learning-rate schedules, pretrained snapshots or vocabularies; every 25th
table logged. Deterministic (a seeded generator), so tests can name tables and rows.
"""

from __future__ import annotations

import warnings

import numpy as np

import embviz
from embviz.config import FusedKernelWarning

_FAMILIES = ("user", "item", "author", "query", "ad", "page", "device", "geo", "topic", "time")
_KINDS = ("id", "clicks", "views", "hashed", "bucket", "category", "cross", "seq")


def wide_tables(n: int = 2000, seed: int = 0) -> list[dict]:
    """The tables of `wide_config` as plain data (what a YAML file would hold)."""
    rng = np.random.default_rng(seed)
    # Log-uniform rows between 10 and 5e6, plus a handful of 1e7-1e8 id tables up front.
    rows = np.round(10 ** rng.uniform(1, 6.7, size=n)).astype(np.int64)
    huge = min(n, max(1, n // 250))
    rows[:huge] = np.round(10 ** rng.uniform(7, 8, size=huge)).astype(np.int64)
    tables = []
    for i in range(n):
        family = _FAMILIES[i % len(_FAMILIES)]
        kind = _KINDS[(i // len(_FAMILIES)) % len(_KINDS)]
        r = int(rows[i])
        dim = int(np.clip(4 * round(1.6 * r**0.25 / 4) + 4 * rng.integers(0, 3), 4, 256))
        choice = rng.random()
        if choice < 0.6:
            optimizer: dict = {"adagrad": {"lr": round(float(rng.uniform(0.005, 0.05)), 4)}}
        elif choice < 0.85:
            optimizer = {"adam": {"lr": round(float(rng.uniform(1e-4, 1e-3)), 5)}}
        else:
            sgd: dict = {"lr": round(float(rng.uniform(0.01, 0.1)), 3)}
            if rng.random() < 0.3:
                sgd["momentum"] = 0.9
            optimizer = {"sgd": sgd}
        if i % 97 == 0:
            optimizer["learning_rate"] = {
                "linear_ramp_to_constant": {"learning_rate": 0.01, "num_ramp_steps": 1000}
            }
        table = {
            "name": f"{family}_{kind}_{i:04d}",
            "num_embeddings": r,
            "embedding_dim": dim,
            "data_type": "fp16" if rng.random() < 0.2 else "fp32",
            "optimizer": optimizer,
        }
        if i % 211 == 5:
            table["pretrained"] = {
                "emb_name": table["name"],
                "embedding_snapshot_uri": f"/checkpoints/step_{i}",
            }
        if i % 173 == 7:
            table["vocab"] = f"/vocab/{table['name']}"
        tables.append(table)
    return tables


def wide_config(n: int = 2000, seed: int = 0) -> embviz.LargeEmbeddingsConfig:
    """``n`` tables shaped like a production ranking model's sparse features (see the module)."""
    tables = wide_tables(n, seed)
    logged = [t["name"] for t in tables[::25]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusedKernelWarning)
        return embviz.LargeEmbeddingsConfig.model_validate(
            {"tables": tables, "tables_to_log": logged}
        )


def write_wide_yaml(path, n: int = 2000, seed: int = 0):
    """Write `wide_config` as YAML to ``path``; return the path."""
    from pathlib import Path

    path = Path(path)
    path.write_text(embviz.dump_config(wide_config(n, seed)))
    return path

"""A small TwHIN-style model trained on the CPU, leaving real checkpoints to inspect.

TwHIN (the-algorithm-ml, ``projects/twhin``) learns one embedding per entity (users, tweets) so
that an edge ``lhs --relation--> rhs`` scores ``<lhs, rhs + t_relation>``, with one translation
vector ``t`` per relation, against in-batch negatives under a weighted binary cross-entropy; each
table's optimizer is applied in backward (`embviz.build.build_collection`).

`train_demo` trains that model on a synthetic graph instead of Twitter's: entity popularity
follows a power law (a Zipf law over a random order of the rows), entities belong to communities,
and each relation links a community to another (``c -> c + shift``), so the tables learn something
visible and the translations differ per relation. Rows are looked up in proportion to their
degree: popular rows move away from their initial values, rows never looked up keep them exactly
(SGD without momentum, the TwHIN tables' optimizer, leaves a row with zero gradient untouched).

TwHIN's loss collapses these tables onto one direction. Its negatives are scored without the
translation, so only the positives pull along ``t_relation``: each update of an ``lhs`` row is
about ``(1 - sigmoid) * (rhs + t)``, and with rows initialised tiny next to ``t`` that is ``t``
for every row. The rows move in proportion to how often they are looked up, all along the
translations' common direction: the cosine between two rows then says how popular they are,
not what they link to (`embviz.health` shows it as an effective rank near 1 in the movement).
``translate_negatives=True`` scores the negatives with the translation too, so its pull cancels
between positives and negatives and the rows learn the graph; ``community_shift=0`` makes every
relation link a community to itself, which a translation model can learn (a dot product plus a
translation cannot map community ``c`` to ``c + r``). With both, nearest neighbours share a
community (`embviz.neighbour_purity`).

Everything is written as the-algorithm-ml lays out a run::

    save_dir/
      0/ 50/ 100/ ...          torchsnapshot per checkpoint (step 0: the initial values),
                               app_state {"model": TwHIN-like module, "extra_state": {"step"}}
      vocab/<table>/part-0.parquet    entity_id (int64) -> row (int64), see embviz.vocab
      config.yaml              the (scaled) tables with their vocab folders set
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embviz.arguments import integer, number
from embviz.config import LargeEmbeddingsConfig, dump_config, example, load_config
from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import torchrec

__all__ = [
    "TRANSLATED_LR_SCALE",
    "TWHIN_LR_SCALE",
    "TWHIN_RELATIONS",
    "DemoError",
    "DemoRun",
    "Relation",
    "train_demo",
]

# TwHIN's learning rates (SGD 0.01 and 0.005, translations 0.05) are tuned for hundreds of
# thousands of steps under a loss averaged over 10,500 logits a batch: in 300 steps nothing would
# move. Multiplied by this, the popular rows of the bundled config move by about 100 times their
# initial norm in 300 steps while the loss keeps falling.
TWHIN_LR_SCALE = 1000.0

# With translated negatives nothing pulls every row one way; the tables' own updates
# (``lhs += lr * (1 - sigmoid) * rhs``) start from rows of norm about 1/sqrt(rows) and need this
# larger scale to grow in 300 steps. The translations keep `TWHIN_LR_SCALE`.
TRANSLATED_LR_SCALE = 100_000.0


class DemoError(EmbvizError, ValueError):
    """Demo settings that cannot be trained (mixed dims, unknown tables, a save_dir in use...)."""


@dataclass(frozen=True)
class Relation:
    """An edge type: ``lhs`` entities link to ``rhs`` entities (table names)."""

    name: str
    lhs: str
    rhs: str


# projects/twhin/config/local.yaml: four user -> tweet relations.
TWHIN_RELATIONS: tuple[Relation, ...] = (
    Relation("fav", "user", "tweet"),
    Relation("reply", "user", "tweet"),
    Relation("retweet", "user", "tweet"),
    Relation("magic_recs", "user", "tweet"),
)


@dataclass(frozen=True)
class DemoRun:
    """What `train_demo` wrote and trained.

    Attributes
    ----------
    config : LargeEmbeddingsConfig
        The tables trained (scaled), each with ``vocab`` set to its folder.
    save_dir : pathlib.Path
    steps : int
    checkpoint_steps : tuple of int
        Steps with a snapshot in ``save_dir/<step>/``, 0 (initial values) first.
    collection : torchrec.EmbeddingBagCollection
        The trained collection (its optimizers still applied).
    translations : torch.Tensor
        One translation vector per relation (``relations`` order), after training.
    relations : tuple of Relation
    vocab_paths : dict of str to pathlib.Path
        Table -> vocabulary folder.
    entities : dict of str to pandas.DataFrame
        Table -> one row per table row (index ``row``): ``entity_id``, ``degree`` (edges of the
        synthetic graph touching it), ``community``, ``lookups`` (times training looked it up;
        0 means the row still holds its initial value).
    losses : tuple of float
        Training loss per step.
    seconds : float
        Wall time of the run (graph, training, checkpoints).
    """

    config: LargeEmbeddingsConfig
    save_dir: Path
    steps: int
    checkpoint_steps: tuple[int, ...]
    collection: torchrec.EmbeddingBagCollection
    translations: torch.Tensor
    relations: tuple[Relation, ...]
    vocab_paths: dict[str, Path]
    entities: dict[str, pd.DataFrame]
    losses: tuple[float, ...]
    seconds: float

    @property
    def counts(self) -> dict[str, pd.Series]:
        """Table -> times training looked each row up (indexed by row).

        What `embviz.health` and `embviz.drift` take as ``counts``.
        """
        return {name: frame["lookups"] for name, frame in self.entities.items()}

    @property
    def communities(self) -> dict[str, pd.Series]:
        """Table -> the community of each row of the synthetic graph (indexed by row)."""
        return {name: frame["community"] for name, frame in self.entities.items()}

    def popular(self, table: str, n: int = 10) -> pd.DataFrame:
        """The ``n`` rows of ``table`` with the highest degree, most popular first."""
        return self.entities[table].nlargest(n, "degree")


# --------------------------------------------------------------------------- synthetic graph


@dataclass(frozen=True)
class _Graph:
    lhs: np.ndarray  # row in the relation's lhs table
    rhs: np.ndarray
    relation: np.ndarray  # index into relations
    communities: dict[str, np.ndarray]


def _popularity(rows: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``rank ** -exponent`` over a random order of the rows, summing to 1."""
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -exponent
    weights = weights[rng.permutation(rows)]
    return weights / weights.sum()


def _make_graph(
    cfg: LargeEmbeddingsConfig,
    relations: tuple[Relation, ...],
    edges: int,
    communities: int,
    exponent: float,
    within: float,
    rng: np.random.Generator,
    shift: int = 1,
) -> _Graph:
    sizes = {t.name: t.num_embeddings for t in cfg.tables}
    popularity = {name: _popularity(n, exponent, rng) for name, n in sizes.items()}
    community = {name: rng.integers(0, communities, size=n) for name, n in sizes.items()}
    # Members of each community with their popularity, to draw the rhs of an edge inside one.
    members: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name in sizes:
        groups = []
        for c in range(communities):
            rows = np.flatnonzero(community[name] == c)
            if len(rows) == 0:  # a tiny table: fall back to every row
                rows = np.arange(sizes[name])
            p = popularity[name][rows]
            groups.append((rows, p / p.sum()))
        members[name] = groups
    per_relation = np.full(len(relations), edges // len(relations))
    per_relation[: edges % len(relations)] += 1
    lhs_parts, rhs_parts, rel_parts = [], [], []
    for r, relation in enumerate(relations):
        n = int(per_relation[r])
        lhs = rng.choice(sizes[relation.lhs], size=n, p=popularity[relation.lhs])
        rhs = rng.choice(sizes[relation.rhs], size=n, p=popularity[relation.rhs])
        # Most edges stay inside the relation's target community: c -> c + r * shift.
        target = (community[relation.lhs][lhs] + r * shift) % communities
        inside = rng.random(n) < within
        for c in range(communities):
            chosen = np.flatnonzero(inside & (target == c))
            if len(chosen):
                rows, p = members[relation.rhs][c]
                rhs[chosen] = rng.choice(rows, size=len(chosen), p=p)
        lhs_parts.append(lhs)
        rhs_parts.append(rhs)
        rel_parts.append(np.full(n, r))
    return _Graph(
        lhs=np.concatenate(lhs_parts),
        rhs=np.concatenate(rhs_parts),
        relation=np.concatenate(rel_parts),
        communities=community,
    )


# --------------------------------------------------------------------------- model


def _model_class() -> type[torch.nn.Module]:
    import torch

    class LargeEmbeddings(torch.nn.Module):
        """the-algorithm-ml's wrapper: the collection sits at ``large_embeddings.ebc``."""

        def __init__(self, ebc: torchrec.EmbeddingBagCollection):
            super().__init__()
            self.ebc = ebc

        def forward(self, features: Any) -> Any:
            return self.ebc(features)

    class TwhinDemoModel(torch.nn.Module):
        """TwHIN's TwhinModel: translation embeddings, in-batch negatives per relation."""

        def __init__(self, ebc: torchrec.EmbeddingBagCollection, relations: int, dim: int):
            super().__init__()
            self.large_embeddings = LargeEmbeddings(ebc)
            # One translation per relation, initialised as TwHIN does (uniform in [0, 1)).
            self.all_trans_embs = torch.nn.Parameter(
                torch.nn.init.uniform_(torch.empty(relations, dim))
            )

    return TwhinDemoModel


def _edge_batch(
    table_names: list[str],
    relation_tables: np.ndarray,
    lhs: np.ndarray,
    rhs: np.ndarray,
    rel: np.ndarray,
) -> Any:
    """TwHIN's ``EdgesDataset._to_kjt``: 2B lookups (lhs then rhs of each edge), one table each."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    batch = len(lhs)
    # lookup 2i is edge i's lhs, 2i + 1 its rhs
    tables = np.stack([relation_tables[rel, 0], relation_tables[rel, 1]], axis=1).reshape(-1)
    rows = np.stack([lhs, rhs], axis=1).reshape(-1)
    order = np.argsort(tables, kind="stable")
    values = torch.from_numpy(rows[order].astype(np.int64))
    lengths = (np.arange(len(table_names))[:, None] == tables[None, :]).reshape(-1)
    assert lengths.shape == (len(table_names) * 2 * batch,)
    return KeyedJaggedTensor(
        keys=table_names,
        values=values,
        lengths=torch.from_numpy(lengths.astype(np.int32)),
    )


def _twhin_loss(
    model: torch.nn.Module,
    kjt: Any,
    rel: torch.Tensor,
    dim: int,
    in_batch_negatives: int,
    generator: torch.Generator,
    translate_negatives: bool = False,
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    batch = rel.shape[0]
    pooled = model.large_embeddings(kjt).values()  # 2B x (T * D)
    # Each lookup hits one table and the others pool an empty bag (zeros): sum over tables.
    x = pooled.reshape(2 * batch, -1, dim).sum(1).reshape(batch, 2, dim)
    lhs, rhs = x[:, 0, :], x[:, 1, :]
    translated = rhs + model.all_trans_embs[rel]
    positives = (lhs * translated).sum(-1)
    negatives = []
    for relation in torch.unique(rel).tolist():
        mask = rel == relation
        count = int(mask.sum())
        lhs_r = lhs[mask]
        repeat = math.ceil(in_batch_negatives / count)
        pick_rhs = torch.randperm(count, generator=generator).repeat(repeat)[:in_batch_negatives]
        pick_lhs = torch.randperm(count, generator=generator).repeat(repeat)[:in_batch_negatives]
        # As TwHIN: a negative pairs an lhs with another edge's rhs (or the reverse) and is
        # scored without the translation, so only the positives pull along t_relation. With
        # translate_negatives the rhs side carries the translation in both, as in the positives.
        rhs_r = rhs[mask]
        if translate_negatives:
            rhs_r = rhs_r + model.all_trans_embs[relation]
        negatives.append((lhs_r @ rhs_r[pick_rhs].T).flatten())
        negatives.append((rhs_r @ lhs_r[pick_lhs].T).flatten())
    negative_logits = torch.cat(negatives)
    logits = torch.cat([positives, negative_logits])
    # TwhinModelAndLoss: positives weigh 1, the 2 * B * N negatives B / (2 * B * N) each.
    labels = torch.cat([torch.ones(batch), torch.zeros(len(negative_logits))])
    weights = torch.cat(
        [torch.ones(batch), torch.full((len(negative_logits),), batch / len(negative_logits))]
    )
    return F.binary_cross_entropy_with_logits(logits, labels, weights)


# --------------------------------------------------------------------------- entry point


def _default_relations(cfg: LargeEmbeddingsConfig) -> tuple[Relation, ...]:
    names = cfg.table_names
    if {"user", "tweet"} <= set(names):
        return TWHIN_RELATIONS
    if len(names) == 1:
        return (Relation(f"{names[0]}_to_{names[0]}", names[0], names[0]),)
    # Every table links to the next one (and the last to the first).
    return tuple(
        Relation(f"{a}_to_{b}", a, b) for a, b in zip(names, names[1:] + names[:1], strict=True)
    )


def _check(
    cfg: LargeEmbeddingsConfig, relations: tuple[Relation, ...], steps: int, every: int
) -> int:
    from embviz.optimizers import nan_on_zero_grad

    if not relations:
        raise DemoError("relations must not be empty")
    names = set(cfg.table_names)
    for relation in relations:
        unknown = [t for t in (relation.lhs, relation.rhs) if t not in names]
        if unknown:
            raise DemoError(
                f"relation {relation.name!r}: no table {unknown[0]!r} "
                f"(tables: {', '.join(cfg.table_names)})"
            )
    dims = {t.name: t.embedding_dim for t in cfg.tables}
    if len(set(dims.values())) != 1:
        shown = ", ".join(f"{n} {d}" for n, d in dims.items())
        raise DemoError(
            f"TwHIN's translation embeddings put every table in one space: all tables need the "
            f"same embedding_dim (got {shown})"
        )
    vanishing = [t.name for t in cfg.tables if nan_on_zero_grad(t)]
    if vanishing:
        raise DemoError(
            f"tables {', '.join(vanishing)}: Adam/Adagrad with an eps that is 0 in the table's "
            "dtype would turn untouched rows into NaN when trained unsharded; set a larger eps"
        )
    integer("steps", steps)
    integer("checkpoint_every", every)
    return next(iter(dims.values()))


def _scale_learning_rates(cfg: LargeEmbeddingsConfig, factor: float) -> LargeEmbeddingsConfig:
    number("lr_scale", factor, strict=True)
    if factor == 1:
        return cfg
    tables = []
    for table in cfg.tables:
        optimizer = table.optimizer
        settings = optimizer.settings.model_copy(update={"lr": optimizer.settings.lr * factor})
        update: dict[str, Any] = {optimizer.name: settings}
        if optimizer.learning_rate is not None and optimizer.learning_rate.constant is not None:
            update["learning_rate"] = optimizer.learning_rate.model_copy(
                update={"constant": optimizer.learning_rate.constant * factor}
            )
        tables.append(table.model_copy(update={"optimizer": optimizer.model_copy(update=update)}))
    return cfg.model_copy(update={"tables": tables})


def _prepare_save_dir(save_dir: Path) -> None:
    if save_dir.exists():
        if not save_dir.is_dir():
            raise DemoError(f"{save_dir}: save_dir is a file")
        if any(save_dir.iterdir()):
            raise DemoError(
                f"{save_dir}: save_dir is not empty; pass a new or empty folder (checkpoints "
                "are never overwritten)"
            )
    save_dir.mkdir(parents=True, exist_ok=True)


def _write_vocabularies(
    cfg: LargeEmbeddingsConfig, save_dir: Path, rng: np.random.Generator
) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Snowflake-like ids (large, increasing, gappy) assigned to rows in a random order."""
    from embviz.vocab import write_vocab

    paths: dict[str, Path] = {}
    ids_by_row: dict[str, np.ndarray] = {}
    for i, table in enumerate(cfg.tables):
        n = table.num_embeddings
        base = (i + 1) * 10**15
        ids = base + np.cumsum(rng.integers(1, 1_000, size=n, dtype=np.int64))
        rows = rng.permutation(n).astype(np.int64)
        paths[table.name] = write_vocab(save_dir / "vocab" / table.name, ids, rows)
        by_row = np.empty(n, dtype=np.int64)
        by_row[rows] = ids
        ids_by_row[table.name] = by_row
    return paths, ids_by_row


def train_demo(
    save_dir: str | os.PathLike[str],
    config: LargeEmbeddingsConfig | None = None,
    steps: int = 300,
    checkpoint_every: int = 50,
    scale: float | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    relations: tuple[Relation, ...] | None = None,
    batch_size: int = 500,
    in_batch_negatives: int = 10,
    translation_lr: float = 0.05,
    lr_scale: float | None = None,
    edges: int = 200_000,
    communities: int = 8,
    popularity_exponent: float = 1.0,
    within_community: float = 0.8,
    translate_negatives: bool = False,
    community_shift: int = 1,
) -> DemoRun:
    """Train a TwHIN-style model on a synthetic power-law graph and checkpoint it.

    Parameters
    ----------
    save_dir : str or path-like
        New or empty folder for the checkpoints, vocabularies and config.
    config : LargeEmbeddingsConfig, optional
        Tables to train, all with one ``embedding_dim``. Default: the bundled ``twhin.yaml``
        (``model.embeddings``: ``user`` 424,241 x 4 and ``tweet`` 72,543 x 4, SGD).
    steps : int
        Training steps of ``batch_size`` edges.
    checkpoint_every : int
        Snapshot every this many steps; step 0 (initial values) and the last step always.
    scale : float or None
        Multiply every table's rows by this (`embviz.build.scale_config`); None keeps them
        (the bundled config's 424,241 + 72,543 rows train 300 steps in about 5 s on 2 cores).
    seed : int
        Seeds the graph, the vocabularies, the initial values and the batches: the same seed
        gives the same tables.
    progress : bool
        Show a progress bar over the steps.
    relations : tuple of Relation, optional
        Edge types; by default TwHIN's four user -> tweet relations when the config has ``user``
        and ``tweet`` tables, else each table linked to the next.
    batch_size, in_batch_negatives : int
        Edges per step and negatives per edge side (TwHIN: 500 and 10).
    translation_lr : float
        SGD learning rate of the translations (TwHIN's ``translation_optimizer``: 0.05).
    lr_scale : float, optional
        Multiplies every learning rate (tables and translations; ``config.yaml`` and
        ``DemoRun.config`` hold the scaled ones). Default: `TWHIN_LR_SCALE` for the bundled
        config, whose rates are tuned for hundreds of thousands of steps (with
        ``translate_negatives``: `TRANSLATED_LR_SCALE` for the tables and `TWHIN_LR_SCALE` for
        the translations), and 1 for a config you pass.
    edges : int
        Edges in the synthetic graph, split evenly over the relations.
    communities : int
        Communities the entities fall into; relation ``r`` links community ``c`` to ``c + r``.
    popularity_exponent : float
        Zipf exponent of the entity popularity (1: the classic power law).
    within_community : float
        Share of edges that follow the community rule (the rest link any two entities).
    translate_negatives : bool
        Score the in-batch negatives with the relation's translation too (TwHIN does not). See
        the module docstring: without it the tables collapse onto one direction.
    community_shift : int
        Relation ``r`` links community ``c`` to ``c + r * community_shift``; 0 keeps every edge
        that follows the rule inside one community.

    Returns
    -------
    DemoRun

    Raises
    ------
    DemoError
        Tables with different dims, relations naming unknown tables, Adam/Adagrad with an eps that
        would give NaN, or a ``save_dir`` that is not empty.
    ArgumentError
        Bad ``steps``, ``checkpoint_every``, ``lr_scale`` or ``scale``.
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from embviz.build import build_collection, scale_config
    from embviz.snapshots import save_snapshot

    started = time.perf_counter()
    translation_scale = lr_scale
    if config is None:
        config = load_config(example("twhin"), key="model.embeddings")
        if lr_scale is None:
            lr_scale = TRANSLATED_LR_SCALE if translate_negatives else TWHIN_LR_SCALE
            translation_scale = TWHIN_LR_SCALE
    lr_scale = 1.0 if lr_scale is None else lr_scale
    translation_scale = lr_scale if translation_scale is None else translation_scale
    integer("community_shift", community_shift, minimum=0)
    cfg = _scale_learning_rates(scale_config(config, scale), lr_scale)
    translation_lr = translation_lr * translation_scale
    relations = tuple(relations) if relations is not None else _default_relations(cfg)
    dim = _check(cfg, relations, steps, checkpoint_every)
    folder = Path(save_dir)
    _prepare_save_dir(folder)

    rng = np.random.default_rng(seed)
    vocab_paths, ids_by_row = _write_vocabularies(cfg, folder, rng)
    cfg = cfg.model_copy(
        update={
            "tables": [t.model_copy(update={"vocab": str(vocab_paths[t.name])}) for t in cfg.tables]
        }
    )
    (folder / "config.yaml").write_text(dump_config(cfg))
    graph = _make_graph(
        cfg,
        relations,
        edges,
        communities,
        popularity_exponent,
        within_community,
        rng,
        shift=community_shift,
    )

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ebc = build_collection(cfg, device="cpu", apply_optimizers=True, progress=False)
    model = _model_class()(ebc, len(relations), dim)
    translation_optimizer = torch.optim.SGD([model.all_trans_embs], lr=translation_lr)

    table_names = cfg.table_names
    relation_tables = np.array(
        [[table_names.index(r.lhs), table_names.index(r.rhs)] for r in relations]
    )
    lookups = {
        name: np.zeros(t.num_embeddings, dtype=np.int64)
        for name, t in zip(table_names, cfg.tables, strict=True)
    }
    checkpoint_steps = [0]
    save_snapshot(model, folder / "0", step=0)
    losses: list[float] = []
    bar = tqdm(range(1, steps + 1), desc="training", unit="step", disable=not progress)
    # The ops are tiny (a step is 1,000 lookups of a few floats): one thread is several times
    # faster than two that fight other processes for a busy machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in bar:
            picked = rng.integers(0, len(graph.lhs), size=batch_size)
            lhs, rhs, rel = graph.lhs[picked], graph.rhs[picked], graph.relation[picked]
            kjt = _edge_batch(table_names, relation_tables, lhs, rhs, rel)
            loss = _twhin_loss(
                model,
                kjt,
                torch.from_numpy(rel),
                dim,
                in_batch_negatives,
                generator,
                translate_negatives=translate_negatives,
            )
            translation_optimizer.zero_grad()
            loss.backward()  # the tables' optimizers run here, in backward
            translation_optimizer.step()
            losses.append(float(loss.detach()))
            for side, rows in ((0, lhs), (1, rhs)):
                for r, relation in enumerate(relations):
                    table = relation.lhs if side == 0 else relation.rhs
                    np.add.at(lookups[table], rows[rel == r], 1)
            if step % checkpoint_every == 0 or step == steps:
                save_snapshot(model, folder / str(step), step=step)
                checkpoint_steps.append(step)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        torch.set_num_threads(threads)
        bar.close()

    entities: dict[str, pd.DataFrame] = {}
    for table in cfg.tables:
        n = table.num_embeddings
        degree = np.zeros(n, dtype=np.int64)
        for r, relation in enumerate(relations):
            mask = graph.relation == r
            if relation.lhs == table.name:
                degree += np.bincount(graph.lhs[mask], minlength=n)
            if relation.rhs == table.name:
                degree += np.bincount(graph.rhs[mask], minlength=n)
        entities[table.name] = pd.DataFrame(
            {
                "entity_id": ids_by_row[table.name],
                "degree": degree,
                "community": graph.communities[table.name].astype(np.int64),
                "lookups": lookups[table.name],
            },
            index=pd.RangeIndex(n, name="row"),
        )
    return DemoRun(
        config=cfg,
        save_dir=folder,
        steps=steps,
        checkpoint_steps=tuple(checkpoint_steps),
        collection=ebc,
        translations=model.all_trans_embs.detach().clone(),
        relations=relations,
        vocab_paths=vocab_paths,
        entities=entities,
        losses=tuple(losses),
        seconds=time.perf_counter() - started,
    )

"""One source for what a table's optimizer config becomes in torch, FBGEMM and torchrec's planner.

==========  ===============================  ==============================  ==========
config      torch.optim, unsharded            FBGEMM fused kernel, sharded     planner
==========  ===============================  ==============================  ==========
sgd         ``SGD(lr, momentum)``             EXACT_SGD                        0
adagrad     ``Adagrad(lr, eps)``              EXACT_ADAGRAD                    1
adam        ``Adam(lr, betas, eps)``          ADAM                             2
adagrad *   ``torchrec.optim.RowWiseAdagrad`` EXACT_ROWWISE_ADAGRAD            1 / D
==========  ===============================  ==============================  ==========

(* with ``adagrad="rowwise"``, the what-if of FBGEMM's row-wise Adagrad.)

TwHIN applies each table's optimizer with torchrec's ``apply_optimizer_in_backward``. The class
and keyword arguments given there go two ways: an unsharded collection runs the torch optimizer
itself (`torch_optimizer`: torch's own class and argument names, ``betas`` a tuple), while
`DistributedModelParallel` maps the class to an FBGEMM ``EmbOptimType`` and passes the keyword
arguments to FBGEMM's ``SplitTableBatchedEmbeddingBagsCodegen`` (torchrec renames ``lr`` to
``learning_rate``). FBGEMM has no ``betas`` argument, so an Adam table sharded with torch's
arguments fails to build; `fused_optimizer` gives FBGEMM's names (``beta1``, ``beta2``) with
torchrec's placeholder class for the same ``EmbOptimType``.

The planner column is torchrec's optimizer-state multiplier (its private
``shard_estimators._get_optimizer_multipler``, kept here so `embviz.memory` needs no torchrec;
``tests/test_optimizers.py`` pins it against torchrec's function).

The names are plain strings: importing this module imports neither torch nor torchrec.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embviz.arguments import choice
from embviz.config import DataType, EmbeddingBagConfig

if TYPE_CHECKING:
    import torch
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

__all__ = [
    "ADAGRAD_STATES",
    "OptimizerSpec",
    "apply_optimizer",
    "eps_vanishes",
    "fused_optimizer",
    "fused_type",
    "fused_type_name",
    "nan_on_zero_grad",
    "optimizer_spec",
    "planner_multiplier",
    "torch_class_name",
    "torch_optimizer",
]

ADAGRAD_STATES: tuple[str, ...] = ("exact", "rowwise")

# FBGEMM's EmbOptimType member names (fbgemm_gpu.split_embedding_configs), as torchrec maps
# torch.optim.SGD/Adagrad/Adam and torchrec.optim.RowWiseAdagrad to them.
_FUSED_TYPE = {"sgd": "EXACT_SGD", "adagrad": "EXACT_ADAGRAD", "adam": "ADAM"}
_ROWWISE_FUSED_TYPE = "EXACT_ROWWISE_ADAGRAD"

_TORCH_CLASS = {
    "sgd": "torch.optim.SGD",
    "adagrad": "torch.optim.Adagrad",
    "adam": "torch.optim.Adam",
}
_ROWWISE_CLASS = "torchrec.optim.RowWiseAdagrad"
# For a sharded Adam table: torchrec's placeholder maps to ADAM like torch.optim.Adam but takes
# FBGEMM's keyword arguments (torch.optim.Adam refuses beta1/beta2, FBGEMM refuses betas).
_FUSED_ADAM_CLASS = "torchrec.optim.Adam"

# torchrec's planner: optimizer-state bytes = multiplier x weight bytes.
_PLANNER_MULTIPLIER = {"sgd": 0.0, "adagrad": 1.0, "adam": 2.0}


@dataclass(frozen=True)
class OptimizerSpec:
    """What one table's optimizer is in torch and FBGEMM (see the module docstring).

    Attributes
    ----------
    optimizer : str
        The config's optimizer: ``"sgd"``, ``"adagrad"`` or ``"adam"``.
    torch_class : str
        Dotted name of the class an unsharded collection runs (``"torch.optim.Adam"``).
    torch_kwargs : tuple of (str, value)
        Its keyword arguments, torch's names.
    fused_type : str
        FBGEMM's ``EmbOptimType`` member name (``"EXACT_ADAGRAD"``).
    fused_class : str
        Dotted name of the class to apply when the table is sharded onto fused kernels: torchrec
        maps it to ``fused_type``.
    fused_kwargs : tuple of (str, value)
        Keyword arguments FBGEMM takes (``lr`` becomes FBGEMM's ``learning_rate`` in torchrec).
    """

    optimizer: str
    torch_class: str
    torch_kwargs: tuple[tuple[str, Any], ...]
    fused_type: str
    fused_class: str
    fused_kwargs: tuple[tuple[str, Any], ...]


def torch_class_name(optimizer: str, adagrad: str = "exact") -> str:
    """``"torch.optim.Adagrad"``, or torchrec's RowWiseAdagrad for ``adagrad="rowwise"``."""
    if optimizer == "adagrad" and adagrad == "rowwise":
        return _ROWWISE_CLASS
    return _TORCH_CLASS[optimizer]


def fused_type_name(optimizer: str, adagrad: str = "exact") -> str:
    """FBGEMM's ``EmbOptimType`` name: ``"EXACT_SGD"``, ``"EXACT_ADAGRAD"``, ``"ADAM"``, ..."""
    if optimizer == "adagrad" and adagrad == "rowwise":
        return _ROWWISE_FUSED_TYPE
    return _FUSED_TYPE[optimizer]


def planner_multiplier(optimizer: str | None, embedding_dim: int, adagrad: str = "exact") -> float:
    """torchrec's planner estimate of optimizer-state bytes per weight byte.

    Adam 2, SGD 0, row-wise Adagrad ``1 / embedding_dim``, Adagrad 1; 0 with no optimizer
    (``None``: EVALUATE and INFERENCE). The same rule as torchrec 1.6-1.8's
    ``_get_optimizer_multipler``, which sees only the optimizer class and the table width.
    """
    if optimizer is None:
        return 0.0
    if optimizer == "adagrad" and adagrad == "rowwise":
        return 1 / embedding_dim
    return _PLANNER_MULTIPLIER[optimizer]


def optimizer_spec(table: EmbeddingBagConfig, adagrad: str = "exact") -> OptimizerSpec:
    """The torch and FBGEMM forms of ``table``'s optimizer (pure: imports nothing).

    Parameters
    ----------
    table : EmbeddingBagConfig
        One table of the config.
    adagrad : {"exact", "rowwise"}
        ``"rowwise"`` turns an Adagrad table into FBGEMM's EXACT_ROWWISE_ADAGRAD (torchrec's
        ``RowWiseAdagrad``); other optimizers are unchanged.

    Raises
    ------
    ArgumentError
        For an unknown ``adagrad``.
    """
    adagrad = choice("adagrad", adagrad, ADAGRAD_STATES)
    name = table.optimizer.name
    settings = table.optimizer.settings
    torch_class = torch_class_name(name, adagrad)
    fused_class = torch_class
    if name == "sgd":
        torch_kwargs: dict[str, Any] = {"lr": settings.lr, "momentum": settings.momentum}
        fused_kwargs = dict(torch_kwargs)
    elif name == "adagrad":
        torch_kwargs = {"lr": settings.lr, "eps": settings.eps}
        fused_kwargs = dict(torch_kwargs)
    else:
        beta1, beta2 = (float(b) for b in settings.betas)
        torch_kwargs = {"lr": settings.lr, "betas": (beta1, beta2), "eps": settings.eps}
        fused_kwargs = {"lr": settings.lr, "beta1": beta1, "beta2": beta2, "eps": settings.eps}
        fused_class = _FUSED_ADAM_CLASS
    return OptimizerSpec(
        optimizer=name,
        torch_class=torch_class,
        torch_kwargs=tuple(torch_kwargs.items()),
        fused_type=fused_type_name(name, adagrad),
        fused_class=fused_class,
        fused_kwargs=tuple(fused_kwargs.items()),
    )


def _load(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def torch_optimizer(
    table: EmbeddingBagConfig, adagrad: str = "exact"
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """Class and keyword arguments of the optimizer an unsharded collection runs for ``table``.

    What TwHIN passes to ``apply_optimizer_in_backward``: ``torch.optim.SGD``, ``Adagrad`` or
    ``Adam`` with torch's argument names (``betas`` as a tuple); torchrec's ``RowWiseAdagrad``
    for ``adagrad="rowwise"``.
    """
    spec = optimizer_spec(table, adagrad)
    return _load(spec.torch_class), dict(spec.torch_kwargs)


def fused_optimizer(
    table: EmbeddingBagConfig, adagrad: str = "exact"
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """Class and keyword arguments for a table that DMP shards onto FBGEMM's fused kernels.

    torchrec maps the class to `fused_type` and hands the arguments to FBGEMM, which takes
    ``beta1``/``beta2`` where torch takes ``betas``.
    """
    spec = optimizer_spec(table, adagrad)
    return _load(spec.fused_class), dict(spec.fused_kwargs)


def fused_type(table: EmbeddingBagConfig, adagrad: str = "exact") -> EmbOptimType:
    """FBGEMM's ``EmbOptimType`` for ``table`` once sharded (imports fbgemm_gpu)."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return EmbOptimType[optimizer_spec(table, adagrad).fused_type]


def apply_optimizer(
    weight: torch.nn.Parameter,
    table: EmbeddingBagConfig,
    *,
    fused: bool = False,
    adagrad: str = "exact",
) -> None:
    """Apply ``table``'s optimizer in backward to its weight, as TwHIN does.

    ``fused``: the weight will be sharded onto FBGEMM's fused kernels (`fused_optimizer`);
    otherwise torch runs it (`torch_optimizer`: unsharded, or a data-parallel replica).
    """
    import warnings

    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    cls, kwargs = (fused_optimizer if fused else torch_optimizer)(table, adagrad)
    with warnings.catch_warnings():
        # torchrec >= 1.2 marks its wrapper deprecated in favour of torch's private
        # _apply_optimizer_in_backward; TwHIN calls torchrec's, and so do we.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        apply_optimizer_in_backward(optimizer_class=cls, params=[weight], optimizer_kwargs=kwargs)


def eps_vanishes(optimizer: str, eps: float, dtype: torch.dtype) -> bool:
    """True when torch's Adam/Adagrad would divide 0 by 0 for a row without gradient.

    They divide by ``sqrt(state) + eps`` in the weight's dtype: with ``eps`` 0, or too small to
    be represented in fp16 (below about 3e-8), a row whose state is 0 gets 0/0. ``optimizer``
    is the config name or the torch class name.
    """
    import torch

    if optimizer not in ("adam", "adagrad", "Adam", "Adagrad"):
        return False
    return float(torch.tensor(eps, dtype=dtype)) == 0.0


def nan_on_zero_grad(table: EmbeddingBagConfig) -> bool:
    """`eps_vanishes` for ``table``'s optimizer in its dtype (unsharded, torch.optim)."""
    import torch

    dtype = torch.float32 if table.data_type is DataType.FP32 else torch.float16
    eps = getattr(table.optimizer.settings, "eps", 1.0)
    return eps_vanishes(table.optimizer.name, eps, dtype)

"""`ServingPanel`: pick a serving dtype per table or for all, see bytes, savings and the fit.

Wiring only. The bytes are ``memory_table(cfg, mode="inference", serving_dtype=...)`` (torchrec's
quantized collection, `embviz.serving`), the fit on the serving hosts `embviz.serving.serving_fit`,
and the measured quality, when a `embviz.quantization_error_table` frame is given, is looked up
in it for each table's chosen dtype.

A dtype a table's width cannot take (`embviz.serving.ServingWidthError`) is marked at that
table's control with the rule, and the tables, totals and fit keep the last valid choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from embviz.config import LargeEmbeddingsConfig, load_config
from embviz.errors import EmbvizError
from embviz.widgets._common import (
    ERROR_COLOR,
    OK_COLOR,
    WARN_COLOR,
    guarded,
    mark_invalid,
    message_html,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ServingPanel"]

#: Choices of the "all tables" control: a serving dtype, or each table's own config dtype.
OWN_DTYPE = "config dtype"


class ServingPanel(widgets.VBox):
    """Serving dtypes per table: bytes in torchrec's quantized collection and the host fit.

    Parameters
    ----------
    source : LargeEmbeddingsConfig, CollectionEditor or path
        The tables. With an object that has an observable ``config`` trait (the
        `CollectionEditor`), the panel follows its last valid config.
    serving_dtype : str or mapping, optional
        Initial choice: one dtype for all tables (``"int8"``) or table -> dtype; tables left
        out keep their config dtype. A dtype a table's width cannot take leaves that table in
        its config dtype (the status line names it).
    hosts : int
        Serving hosts.
    host_gib : float
        Memory per serving host for the tables, GiB.
    quality : pandas.DataFrame, optional
        From `embviz.quantization_error_table` on trained weights of these tables: the panel
        shows, for each table's chosen dtype, the share of nearest neighbours kept and the
        relative error of pooled bags.
    max_tables : int
        Rows of the bytes table: the largest tables, the rest summed into one row (the totals
        and the fit always count every table).

    Attributes
    ----------
    controls : dict
        ``"all"`` (Dropdown: a dtype for every table), ``"table"`` (Dropdown: pick a table),
        ``"dtype"`` (Dropdown: the picked table's dtype), ``"hosts"`` (IntText),
        ``"host_gib"`` (FloatText). Tests and notebooks drive these.
    outputs : dict
        ``"table"`` (HTML: bytes per table), ``"fit"`` (HTML: the fit), ``"status"`` (HTML).
    frame : pandas.DataFrame
        The last valid ``memory_table(..., mode="inference", serving_dtype=...)`` (observable).
    fit : ServingFit
        `serving_fit` of that frame (observable).
    error : str
        The current problem, ``""`` when none (observable).
    """

    frame = traitlets.Any(None, read_only=True)
    fit = traitlets.Any(None, read_only=True)
    error = traitlets.Unicode("", read_only=True)

    def __init__(
        self,
        source: LargeEmbeddingsConfig | Any | str | os.PathLike[str],
        *,
        serving_dtype: str | Mapping[str, str] | None = "int8",
        hosts: int = 1,
        host_gib: float = 64.0,
        quality: pd.DataFrame | None = None,
        max_tables: int = 30,
    ):
        super().__init__()
        from embviz.serving import SERVING_DTYPES

        self.add_class("embviz-serving-panel")
        if isinstance(source, LargeEmbeddingsConfig):
            config = source
        elif isinstance(source, (str, os.PathLike)):
            config = load_config(source)
        else:  # a CollectionEditor (duck-typed: its `config` trait)
            config = source.config
            source.observe(lambda change: self.set_config(change["new"]), names="config")
        self._config: LargeEmbeddingsConfig = config
        self._quality = quality
        self._max_tables = max_tables
        self._syncing = False
        self._chosen: dict[str, str] = {}

        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        guard = guarded(self._exceptions, self._on_unexpected)

        self._all = widgets.Dropdown(
            description="all tables",
            options=[*SERVING_DTYPES, OWN_DTYPE],
            value=serving_dtype if isinstance(serving_dtype, str) else OWN_DTYPE,
            layout=widgets.Layout(width="230px"),
        )
        self._table = widgets.Dropdown(
            description="table", options=config.table_names, layout=widgets.Layout(width="260px")
        )
        self._dtype = widgets.Dropdown(
            description="served as",
            options=list(SERVING_DTYPES),
            layout=widgets.Layout(width="200px"),
        )
        self._dtype.add_class("embviz-serving-dtype")
        self._hosts = widgets.BoundedIntText(
            value=hosts,
            min=1,
            max=100_000,
            description="hosts",
            layout=widgets.Layout(width="150px"),
        )
        self._host_gib = widgets.BoundedFloatText(
            value=host_gib,
            min=0.001,
            max=1e9,
            description="GiB/host",
            layout=widgets.Layout(width="170px"),
        )
        self._table_html = widgets.HTML()
        self._fit_html = widgets.HTML()
        self._status = widgets.HTML()
        self._all.observe(guard(self._on_all), names="value")
        self._table.observe(guard(lambda _: self._show_table()), names="value")
        self._dtype.observe(guard(self._on_dtype), names="value")
        self._hosts.observe(guard(lambda _: self._update()), names="value")
        self._host_gib.observe(guard(lambda _: self._update()), names="value")

        self.children = [
            widgets.HTML("<b>Serving dtypes</b> (torchrec's quantized collection, inference)"),
            widgets.HBox([self._all, self._hosts, self._host_gib]),
            widgets.HBox([self._table, self._dtype]),
            self._status,
            self._table_html,
            self._fit_html,
            self._exceptions,
        ]
        self._assign(serving_dtype)
        self._update()

    # ------------------------------------------------------------------ public
    @property
    def controls(self) -> dict[str, Any]:
        """The controls by name."""
        return {
            "all": self._all,
            "table": self._table,
            "dtype": self._dtype,
            "hosts": self._hosts,
            "host_gib": self._host_gib,
        }

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The output widgets by name."""
        return {"table": self._table_html, "fit": self._fit_html, "status": self._status}

    @property
    def config(self) -> LargeEmbeddingsConfig:
        """The config whose tables the panel serves."""
        return self._config

    @property
    def serving_dtype(self) -> dict[str, str]:
        """The dtype chosen for each table, in config order."""
        return dict(self._chosen)

    def set_config(self, cfg: LargeEmbeddingsConfig) -> None:
        """Follow a new config: tables kept keep their dtype, new ones take the "all" choice."""
        kept = {name: d for name, d in self._chosen.items() if name in cfg.table_names}
        self._config = cfg
        default = None if self._all.value == OWN_DTYPE else self._all.value
        self._syncing = True
        try:
            self._table.options = cfg.table_names
        finally:
            self._syncing = False
        self._assign(default, keep=kept)
        self._update()

    # ------------------------------------------------------------------ wiring
    def _assign(
        self, dtype: str | Mapping[str, str] | None, keep: Mapping[str, str] | None = None
    ) -> None:
        """Set every table's choice (kept ones first); widths a dtype refuses keep their own."""
        from embviz.serving import SERVING_WIDTH_MULTIPLE

        keep = keep or {}
        chosen, refused = {}, []
        for table in self._config.tables:
            own = table.data_type.value
            if table.name in keep:
                wanted = keep[table.name]
            elif isinstance(dtype, Mapping):
                wanted = dtype.get(table.name, own)
            else:
                wanted = dtype or own
            if table.embedding_dim % SERVING_WIDTH_MULTIPLE[wanted]:
                refused.append(table.name)
                wanted = own
            chosen[table.name] = wanted
        self._chosen = chosen
        self._refused = refused
        self._show_table()

    def _show_table(self) -> None:
        """The dtype control shows the picked table's choice (without triggering an update)."""
        name = self._table.value
        if name is None or name not in self._chosen:
            return
        self._syncing = True
        try:
            self._dtype.value = self._chosen[name]
        finally:
            self._syncing = False
        mark_invalid(self._dtype, "")

    def _on_all(self, change: dict) -> None:
        self._assign(None if change["new"] == OWN_DTYPE else change["new"])
        self._update()

    def _on_dtype(self, change: dict) -> None:
        if self._syncing or self._table.value is None:
            return
        from embviz.serving import ServingWidthError, serving_dtypes

        name = self._table.value
        trial = {**self._chosen, name: change["new"]}
        try:
            serving_dtypes(self._config, trial)
        except ServingWidthError as exc:
            mark_invalid(self._dtype, str(exc))
            self._fail(str(exc))
            return
        mark_invalid(self._dtype, "")
        self._chosen = trial
        self._refused = []
        self._update()

    def _on_unexpected(self, exc: BaseException) -> None:
        self.set_trait("error", f"{type(exc).__name__}: {exc}")
        self._status.value = message_html(self.error, ERROR_COLOR)

    def _update(self) -> None:
        from embviz.memory import memory_table
        from embviz.serving import serving_fit

        try:
            frame = memory_table(self._config, mode="inference", serving_dtype=self.serving_dtype)
            fit = serving_fit(frame, self._hosts.value, self._host_gib.value)
        except EmbvizError as exc:
            self._fail(str(exc))
            return
        self.set_trait("frame", frame)
        self.set_trait("fit", fit)
        self.set_trait("error", "")
        self._table_html.value = _frame_html(frame, self._quality, self._max_tables)
        colour = OK_COLOR if fit.fits else ERROR_COLOR
        self._fit_html.value = message_html(fit.message, colour, "embviz-serving-fit")
        refused = getattr(self, "_refused", [])
        self._status.value = (
            message_html(
                f"{self._all.value} refused by the width of {len(refused)} table(s), kept in "
                f"their config dtype: {', '.join(refused[:10])}"
                + (" ..." if len(refused) > 10 else ""),
                WARN_COLOR,
                "embviz-serving-warning",
            )
            if refused
            else ""
        )

    def _fail(self, message: str) -> None:
        self.set_trait("error", message)
        self._status.value = message_html(
            message + "\n(showing the last valid choice)", ERROR_COLOR, "embviz-serving-error"
        )


_QUALITY_HEADERS = {
    "knn_kept_mean": "neighbours kept",
    "bag_rel_err_mean": "bag error",
}


def _frame_html(frame: pd.DataFrame, quality: pd.DataFrame | None, max_tables: int) -> str:
    """Bytes per table of a serving frame (and measured quality), with a total row."""
    import pandas as pd

    from embviz.htmltable import count, html_table, human, row_classes
    from embviz.memory import largest_tables, totals

    sums = totals(frame)
    frame = largest_tables(frame, max_tables)
    grouped = frame["serving_dtype"].isna().to_numpy()  # the "(k others)" row: no kind

    def kind(column: str, cast: Callable[[Any], object]) -> list[object]:
        return [None if g else cast(v) for g, v in zip(grouped, frame[column], strict=True)]

    shown = pd.DataFrame(
        {
            "table": [str(n) for n in frame.index],
            "config dtype": kind("data_type", str),
            "served as": kind("serving_dtype", str),
            "bytes/row": kind("row_bytes", int),
            "served": frame["total_bytes"].to_numpy(),
            "served (bytes)": frame["total_bytes"].to_numpy(),
            "unquantized": frame["unquantized_bytes"].to_numpy(),
            "saved": (frame["unquantized_bytes"] - frame["total_bytes"]).to_numpy(),
        },
        dtype=object,
    )
    if quality is not None:
        for column, label in _QUALITY_HEADERS.items():
            values = []
            for name, dtype in zip(frame.index, frame["serving_dtype"], strict=True):
                try:
                    values.append(float(quality.loc[(name, dtype), column]))
                except (KeyError, TypeError):
                    values.append(None)
            shown[label] = pd.Series(values, dtype=object)
    saved_all = int(sums["unquantized_bytes"]) - int(sums["total_bytes"])
    total = {"table": "total", "served": int(sums["total_bytes"])}
    total |= {"served (bytes)": int(sums["total_bytes"])}
    total |= {"unquantized": int(sums["unquantized_bytes"]), "saved": saved_all}
    shown.loc[len(shown)] = [total.get(c) for c in shown.columns]

    def saved(value: object) -> str:
        delta = int(value)  # type: ignore[call-overload]
        return f"{'-' if delta < 0 else ''}{human(abs(delta))}"

    three = "{:.3g}".format
    formats = {"served": human, "served (bytes)": count, "unquantized": human, "saved": saved}
    formats |= dict.fromkeys(_QUALITY_HEADERS.values(), three) if quality is not None else {}
    table = html_table(
        shown,
        formats,
        name="serving",
        classes=row_classes(shown, {len(shown) - 1: "total"}),
        table_class="embviz-serving-table",
    )
    style = (
        "<style>.embviz-serving-table {border-collapse: collapse} "
        ".embviz-serving-table td, .embviz-serving-table th {padding: 0.15em 0.6em; "
        "text-align: right} .embviz-serving-table td:first-child {text-align: left} "
        ".embviz-serving-table td.total {font-weight: bold}</style>"
    )
    return style + table

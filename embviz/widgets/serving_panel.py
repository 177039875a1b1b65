"""`ServingPanel`: pick a serving dtype per table or for all, see bytes, savings and the fit.

Wiring only. The bytes are ``memory_table(cfg, mode="inference", serving_dtype=...)`` (torchrec's
quantized collection, `embviz.serving`), the fit on the serving hosts `embviz.serving.serving_fit`,
and the measured quality, when a `embviz.quantization_error_table` frame is given, is looked up
in it for each table's chosen dtype.

A dtype a table's width cannot take (`embviz.serving.ServingWidthError`) is marked at that
table's control with the rule, and the tables, totals and fit keep the last valid choice.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from embviz.config import LargeEmbeddingsConfig, load_config
from embviz.errors import EmbvizError
from embviz.widgets._common import (
    ERROR_COLOR,
    OK_COLOR,
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
        out keep their config dtype.
    hosts : int
        Serving hosts.
    host_gib : float
        Memory per serving host for the tables, GiB.
    quality : pandas.DataFrame, optional
        From `embviz.quantization_error_table` on trained weights of these tables: the panel
        shows, for each table's chosen dtype, the share of nearest neighbours kept and the
        relative error of pooled bags.

    Attributes
    ----------
    controls : dict
        ``"all"`` (Dropdown), ``"hosts"`` (IntText), ``"host_gib"`` (FloatText), and
        ``"tables"``: table name -> Dropdown. Tests and notebooks drive these.
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
        self._bulk = False

        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        guard = guarded(self._exceptions, self._on_unexpected)
        self._guard = guard

        self._all = widgets.Dropdown(
            description="all tables",
            options=[*SERVING_DTYPES, OWN_DTYPE],
            value=serving_dtype if isinstance(serving_dtype, str) else OWN_DTYPE,
            layout=widgets.Layout(width="230px"),
        )
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
        self._table_box = widgets.VBox()
        self._table_controls: dict[str, widgets.Dropdown] = {}
        self._table_html = widgets.HTML()
        self._fit_html = widgets.HTML()
        self._status = widgets.HTML()
        self._all.observe(guard(self._on_all), names="value")
        self._hosts.observe(guard(lambda _: self._update()), names="value")
        self._host_gib.observe(guard(lambda _: self._update()), names="value")

        self._build_table_controls(serving_dtype)
        self.children = [
            widgets.HTML("<b>Serving dtypes</b> (torchrec's quantized collection, inference)"),
            widgets.HBox([self._all, self._hosts, self._host_gib]),
            widgets.HBox([self._table_box, self._table_html]),
            self._fit_html,
            self._status,
            self._exceptions,
        ]
        self._update()

    # ------------------------------------------------------------------ public
    @property
    def controls(self) -> dict[str, Any]:
        """The controls by name (``"tables"``: table name -> its dtype Dropdown)."""
        return {
            "all": self._all,
            "hosts": self._hosts,
            "host_gib": self._host_gib,
            "tables": dict(self._table_controls),
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
        """The dtype chosen for each table (the controls' values), in config order."""
        return {name: control.value for name, control in self._table_controls.items()}

    def set_config(self, cfg: LargeEmbeddingsConfig) -> None:
        """Follow a new config: tables kept keep their dtype, new ones take the "all" choice."""
        chosen = self.serving_dtype
        self._config = cfg
        default = None if self._all.value == OWN_DTYPE else self._all.value
        keep = {t.name: chosen.get(t.name, default or t.data_type.value) for t in cfg.tables}
        self._build_table_controls(keep)
        self._update()

    # ------------------------------------------------------------------ wiring
    def _build_table_controls(self, serving_dtype: str | Mapping[str, str] | None) -> None:
        from embviz.serving import SERVING_DTYPES

        controls = {}
        for table in self._config.tables:
            if isinstance(serving_dtype, str):
                value = serving_dtype
            elif isinstance(serving_dtype, Mapping):
                value = serving_dtype.get(table.name, table.data_type.value)
            else:
                value = table.data_type.value
            control = widgets.Dropdown(
                description=table.name,
                options=list(SERVING_DTYPES),
                value=value,
                style={"description_width": "140px"},
                layout=widgets.Layout(width="240px"),
            )
            control.add_class("embviz-serving-dtype")
            control.observe(self._guard(lambda _: self._update()), names="value")
            controls[table.name] = control
        self._table_controls = controls
        self._table_box.children = tuple(controls.values())

    def _on_all(self, change: dict) -> None:
        self._bulk = True
        try:
            for table in self._config.tables:
                value = table.data_type.value if change["new"] == OWN_DTYPE else change["new"]
                self._table_controls[table.name].value = value
        finally:
            self._bulk = False
        self._update()

    def _on_unexpected(self, exc: BaseException) -> None:
        self.set_trait("error", f"{type(exc).__name__}: {exc}")
        self._status.value = message_html(self.error, ERROR_COLOR)

    def _update(self) -> None:
        if self._bulk:
            return
        from embviz.memory import memory_table
        from embviz.serving import ServingWidthError, serving_fit

        for control in self._table_controls.values():
            mark_invalid(control, "")
        try:
            frame = memory_table(self._config, mode="inference", serving_dtype=self.serving_dtype)
            fit = serving_fit(frame, self._hosts.value, self._host_gib.value)
        except ServingWidthError as exc:
            mark_invalid(self._table_controls[exc.table], str(exc))
            self._fail(str(exc))
            return
        except EmbvizError as exc:
            self._fail(str(exc))
            return
        self.set_trait("frame", frame)
        self.set_trait("fit", fit)
        self.set_trait("error", "")
        self._table_html.value = _frame_html(frame, self._quality)
        colour = OK_COLOR if fit.fits else ERROR_COLOR
        self._fit_html.value = message_html(fit.message, colour, "embviz-serving-fit")
        self._status.value = ""

    def _fail(self, message: str) -> None:
        self.set_trait("error", message)
        self._status.value = message_html(
            message + "\n(showing the last valid choice)", ERROR_COLOR, "embviz-serving-error"
        )


_QUALITY_HEADERS = {
    "knn_kept_mean": "neighbours kept",
    "bag_rel_err_mean": "bag error",
}


def _frame_html(frame: pd.DataFrame, quality: pd.DataFrame | None) -> str:
    """Bytes per table of a serving frame (and measured quality), with a total row."""
    from embviz.memory import human_bytes, totals

    sums = totals(frame)
    quality_head = (
        "".join(f"<th>{h}</th>" for h in _QUALITY_HEADERS.values()) if quality is not None else ""
    )
    head = (
        "<tr><th>table</th><th>config dtype</th><th>served as</th><th>bytes/row</th>"
        "<th>served</th><th>served (bytes)</th><th>unquantized</th><th>saved</th>"
        f"{quality_head}</tr>"
    )
    rows = []
    for name, row in frame.iterrows():
        saved = int(row["unquantized_bytes"]) - int(row["total_bytes"])
        cells = ""
        if quality is not None:
            for column in _QUALITY_HEADERS:
                try:
                    value = float(quality.loc[(name, row["serving_dtype"]), column])
                except KeyError:
                    value = float("nan")
                cells += f"<td>{'' if value != value else f'{value:.3g}'}</td>"
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{row['data_type']}</td>"
            f"<td>{row['serving_dtype']}</td><td>{int(row['row_bytes'])}</td>"
            f"<td>{human_bytes(int(row['total_bytes']))}</td><td>{int(row['total_bytes']):,}</td>"
            f"<td>{human_bytes(int(row['unquantized_bytes']))}</td>"
            f"<td>{'-' if saved < 0 else ''}{human_bytes(abs(saved))}</td>{cells}</tr>"
        )
    saved_all = int(sums["unquantized_bytes"]) - int(sums["total_bytes"])
    blank = "<td></td>" * (len(_QUALITY_HEADERS) if quality is not None else 0)
    rows.append(
        "<tr style='font-weight:bold'><td>total</td><td></td><td></td><td></td>"
        f"<td>{human_bytes(int(sums['total_bytes']))}</td><td>{int(sums['total_bytes']):,}</td>"
        f"<td>{human_bytes(int(sums['unquantized_bytes']))}</td>"
        f"<td>{'-' if saved_all < 0 else ''}{human_bytes(abs(saved_all))}</td>{blank}</tr>"
    )
    style = (
        "<style>.embviz-serving-table td, .embviz-serving-table th {padding: 0.15em 0.6em; "
        "text-align: right} .embviz-serving-table td:first-child {text-align: left}</style>"
    )
    return (
        f"{style}<table class='embviz-serving-table' style='border-collapse:collapse'>"
        f"{head}{''.join(rows)}</table>"
    )

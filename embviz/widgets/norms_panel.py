"""`NormsPanel`: row norms of the logged tables, over training steps, with a look at the rows.

Wiring only: statistics from `embviz.norms` (`norm_stats`, `norm_histogram`, `norm_history`,
`nearest`, `fp16_error_table`), health from `embviz.tablehealth` (`health`, `health_history`,
`spectrum`), tables from `embviz.snapshots`, vocabularies from `embviz.vocab`, drawings from
`embviz.plots.norms` and `embviz.plots.health`; the projection tab is an `embviz.Projector`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from embviz.config import LargeEmbeddingsConfig
from embviz.errors import EmbvizError
from embviz.widgets._common import (
    ERROR_COLOR,
    OK_COLOR,
    WARN_COLOR,
    FigureView,
    guarded,
    message_html,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NormsPanel"]

HISTOGRAM_FIGSIZE = (6.4, 3.8)
BANDS_FIGSIZE = (6.4, 3.8)
FP16_FIGSIZE = (8.0, 2.6)
HEALTH_FIGSIZE = (4.6, 3.4)
_TABS = ("histogram", "bands", "projection", "neighbours", "fp16", "health")
_STAT_HEADERS = {
    "rows": "rows",
    "sampled": "sampled",
    "mean": "mean",
    "std": "std",
    "min": "min",
    "p1": "p1",
    "p5": "p5",
    "p50": "median",
    "p95": "p95",
    "p99": "p99",
    "max": "max",
    "zero_share": "zero rows",
    "unchanged_share": "unchanged since step 0",
}
_TABLE_STYLE = (
    "<style>.embviz-norms-table table {border-collapse: collapse; font-size: 12px;}"
    ".embviz-norms-table th, .embviz-norms-table td {padding: 2px 8px; text-align: right;"
    " border-bottom: 1px solid var(--jp-border-color2, #ddd);}</style>"
)


class _Source:
    """What the panel reads: a checkpoint folder, one snapshot, or a live module."""

    def __init__(self, source: Any):
        from embviz.norms import table_names
        from embviz.snapshots import SnapshotError, checkpoints

        self.module = None
        self.steps: list[int] = []
        self.paths: dict[int, str] = {}
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            try:
                found = checkpoints(path)
            except SnapshotError:
                found = None
            if found is not None and len(found):
                self.kind = "checkpoints"
                self.save_dir = str(path)
                self.steps = [int(s) for s in found["step"]]
                pairs = zip(found["step"], found["path"], strict=True)
                self.paths = {int(step): str(folder) for step, folder in pairs}
                first = self.paths[self.steps[0]]
            else:
                self.kind = "snapshot"
                first = str(path)  # table_names says what is wrong when it is neither
                self.paths = {0: first}
            self.tables = table_names(first)
            self.label = str(path)
        else:
            import torch

            if not isinstance(source, torch.nn.Module):
                raise TypeError(
                    "source must be a checkpoint folder, a snapshot folder or a module holding "
                    f"an EmbeddingBagCollection; got {type(source).__name__}"
                )
            self.kind = "live"
            self.module = source
            self.tables = table_names(source)
            self.label = f"live {type(source).__name__}"

    def at(self, step: int | None) -> Any:
        """What `embviz.norms` functions take as ``source`` at ``step``."""
        if self.module is not None:
            return self.module
        return self.paths[self.steps[-1] if step is None else step] if self.steps else self.paths[0]

    def weight(self, table: str, step: int | None) -> Any:
        """One table's weight at ``step``: the live parameter, or a snapshot's `SnapshotTable`.

        A snapshot's table is read block by block by the projector and `nearest`, never whole.
        """
        from embviz.norms import load_table
        from embviz.snapshot_rows import SnapshotTable

        if self.module is None:
            if table not in self.tables:
                from embviz.errors import UnknownTableError

                raise UnknownTableError([table], self.tables)
            return SnapshotTable(self.at(step), table)
        return load_table(self.at(step), table)

    def describe(self) -> str:
        if self.kind == "checkpoints":
            return (
                f"checkpoint folder {self.label}: {len(self.steps)} finished steps "
                f"({self.steps[0]} to {self.steps[-1]}), {len(self.tables)} tables"
            )
        if self.kind == "snapshot":
            return f"snapshot {self.label}: {len(self.tables)} tables"
        return f"{self.label}: {len(self.tables)} tables"


class NormsPanel(widgets.VBox):
    """Row norms of a table: histogram, quantile bands over steps, projection, neighbours, fp16.

    Parameters
    ----------
    source : path or torch.nn.Module, optional
        A checkpoint folder (``save_dir`` with ``<step>/`` snapshots: the step slider moves
        through them), one snapshot folder, or a live module holding an
        ``EmbeddingBagCollection`` (e.g. `BuildPanel.collection`). May be opened later by path
        in the panel, or with `load`.
    config : LargeEmbeddingsConfig, optional
        Picks the tables offered (``tables_to_log`` first), the vocabularies used for entity ids
        (each table's ``vocab``), and the bytes fp16 would save (`embviz.memory_table`).
    sample : int, optional
        Describe this many rows per table instead of all (as `embviz.norm_stats` takes).
    bins : int
        Histogram bins.
    projection_rows : int
        The projection tab's ``max_points`` (`embviz.Projector`): every row of a table up to
        this many, a stratified sample beyond.
    interactive_figures : bool, optional
        ipympl canvases (default when installed) or static PNG images.

    Attributes
    ----------
    error : str
        The current message (a source, table or query that failed), ``""`` when none.
    """

    error = traitlets.Unicode("", read_only=True)

    def __init__(
        self,
        source: Any = None,
        *,
        config: LargeEmbeddingsConfig | None = None,
        sample: int | None = None,
        bins: int = 50,
        projection_rows: int = 2_000_000,
        interactive_figures: bool | None = None,
    ):
        super().__init__()
        self.add_class("embviz-norms-panel")
        self._config = config
        self._sample = sample
        self._bins = bins
        self._projection_rows = projection_rows
        self._source: _Source | None = None
        self._weight_key: tuple[Any, ...] | None = None
        self._weight: Any = None
        self._vocabs: dict[str, Any] = {}
        self._histories: dict[str, pd.DataFrame] = {}
        self._data: dict[str, Any] = {}
        self._drawn: dict[str, Any] = {}
        self._updating = False

        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        self._exceptions.add_class("embviz-exceptions")
        guard = guarded(self._exceptions, self._on_unexpected)

        self._path = widgets.Text(
            placeholder="checkpoint folder or snapshot",
            description="source",
            layout=widgets.Layout(width="420px"),
        )
        self._open_button = widgets.Button(description="Open", icon="folder-open")
        self._source_html = widgets.HTML()
        self._source_html.add_class("embviz-norms-source")
        self._table = widgets.Dropdown(description="table", options=[])
        self._step = widgets.SelectionSlider(
            description="step", options=[0], continuous_update=False
        )
        self._step.layout.display = "none"
        self._message = widgets.HTML()
        self._message.add_class("embviz-norms-message")
        self._stats_html = widgets.HTML()
        self._stats_html.add_class("embviz-norms-table")

        # Drawn on request (a table or step change), not per keystroke: a full layout each time.
        options = {"interactive": interactive_figures, "relayout_always": True}
        views = {
            "histogram": FigureView(HISTOGRAM_FIGSIZE, **options),
            "bands": FigureView(BANDS_FIGSIZE, **options),
            "fp16": FigureView(FP16_FIGSIZE, ncols=2, **options),
            "spectrum": FigureView(HEALTH_FIGSIZE, **options),
            "rank": FigureView(HEALTH_FIGSIZE, **options),
        }
        self._views = views
        self._projector: Any = None
        self._projection_box = widgets.VBox()
        self._projection_box.add_class("embviz-norms-projection")
        for name, view in views.items():
            view.widget.add_class(f"embviz-norms-{name}-figure")

        self._query = widgets.Text(
            description="entity id", placeholder="id (or row without a vocabulary)"
        )
        self._k = widgets.BoundedIntText(value=10, min=1, max=1000, description="k")
        self._k.layout.width = "150px"
        self._metric = widgets.Dropdown(options=["cosine", "l2"], description="metric")
        self._metric.layout.width = "200px"
        self._find = widgets.Button(description="Find neighbours", icon="search")
        self._neighbours_html = widgets.HTML()
        self._neighbours_html.add_class("embviz-norms-table")
        self._fp16_html = widgets.HTML()
        self._fp16_html.add_class("embviz-norms-table")
        self._health_html = widgets.HTML()
        self._health_html.add_class("embviz-norms-table")
        self._health_histories: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

        self._tabs = widgets.Tab(
            children=[
                views["histogram"].widget,
                views["bands"].widget,
                self._projection_box,
                widgets.VBox(
                    [
                        widgets.HBox([self._query, self._k, self._metric, self._find]),
                        self._neighbours_html,
                    ]
                ),
                widgets.VBox([views["fp16"].widget, self._fp16_html]),
                widgets.VBox(
                    [
                        widgets.HBox([views["spectrum"].widget, views["rank"].widget]),
                        self._health_html,
                    ]
                ),
            ],
            titles=["histogram", "over steps", "projection", "neighbours", "fp16 error", "health"],
        )
        self._tabs.add_class("embviz-norms-tabs")

        self._open_button.on_click(guard(lambda _: self.load(self._path.value.strip())))
        self._table.observe(guard(lambda _: self._refresh()), names="value")
        self._step.observe(guard(lambda _: self._refresh()), names="value")
        self._tabs.observe(guard(lambda _: self._show_visible()), names="selected_index")
        self._find.on_click(guard(lambda _: self.find_neighbours()))
        self.children = [
            widgets.HTML(_TABLE_STYLE),
            widgets.HBox([self._path, self._open_button]),
            self._source_html,
            widgets.HBox([self._table, self._step]),
            self._message,
            self._stats_html,
            self._tabs,
            self._exceptions,
        ]
        if source is not None:
            self.load(source)

    # ------------------------------------------------------------------ public API

    @property
    def controls(self) -> dict[str, widgets.Widget]:
        """The panel's controls.

        Keys: ``path`` (Text) and ``open`` (Button) for the source; ``table`` (Dropdown),
        ``step`` (SelectionSlider over the checkpoints); ``query`` (Text: entity id, or row
        without a vocabulary), ``k`` (BoundedIntText), ``metric`` (Dropdown) and ``find``
        (Button) for the neighbours.
        """
        return {
            "path": self._path,
            "open": self._open_button,
            "table": self._table,
            "step": self._step,
            "query": self._query,
            "k": self._k,
            "metric": self._metric,
            "find": self._find,
        }

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The display widgets.

        Keys: ``source``, ``message``, ``stats``, ``neighbours``, ``fp16``, ``health`` (HTML),
        ``tabs`` (histogram, over steps, projection, neighbours, fp16 error, health) and
        ``exceptions``.
        """
        return {
            "source": self._source_html,
            "message": self._message,
            "stats": self._stats_html,
            "neighbours": self._neighbours_html,
            "fp16": self._fp16_html,
            "health": self._health_html,
            "tabs": self._tabs,
            "exceptions": self._exceptions,
        }

    @property
    def figures(self) -> dict[str, Any]:
        """The Figures by view, brought up to date.

        ``histogram``, ``bands``, ``fp16``, and the health tab's ``spectrum`` and ``rank``.
        """
        for name in ("histogram", "bands", "fp16", "health"):
            self._show(name)
        return {name: view.figure for name, view in self._views.items()}

    @property
    def data(self) -> dict[str, Any]:
        """What the views show, as returned by `embviz.norms` (computed when first shown).

        Keys (when available): ``stats`` (`norm_stats` of the table at the step),
        ``histogram`` (`norm_histogram`), ``history`` (`norm_history`, checkpoint folders),
        ``projection`` (the `embviz.Projector` frame), ``neighbours`` (`nearest`), ``fp16``
        (`fp16_error_table`), ``health`` (`health` of the table at the step),
        ``health_history`` and ``spectra`` (`health_history` and `spectrum_history`, checkpoint
        folders; else ``spectra`` is `spectrum` of the table).
        """
        return dict(self._data)

    @property
    def projector(self) -> Any:
        """The projection tab's `embviz.Projector` (None until that tab is first shown)."""
        return self._projector

    @property
    def table(self) -> str | None:
        """The table shown."""
        return self._table.value

    @property
    def step(self) -> int | None:
        """The checkpoint step shown (None for a single snapshot or a live module)."""
        if self._source is None or self._source.kind != "checkpoints":
            return None
        return self._step.value

    def load(self, source: Any) -> None:
        """Show another source: checkpoint folder, snapshot folder, or live module."""
        try:
            opened = _Source(source)
        except (EmbvizError, TypeError) as exc:
            self._fail(f"not opened: {exc}")
            return
        self._source = opened
        self._weight_key = self._weight = None
        self._histories.clear()
        self._health_histories.clear()
        self._source_html.value = message_html(opened.describe(), OK_COLOR)
        tables = opened.tables
        if self._config is not None:
            logged = [t for t in self._config.logged_tables if t in tables]
            tables = logged + [t for t in tables if t not in logged]
        self._updating = True
        try:
            if opened.kind == "checkpoints":
                self._step.options = opened.steps
                self._step.value = opened.steps[-1]
                self._step.layout.display = None
            else:
                self._step.layout.display = "none"
            self._table.options = tables
            self._table.value = tables[0] if tables else None
        finally:
            self._updating = False
        self._refresh()

    def find_neighbours(self) -> pd.DataFrame | None:
        """`embviz.norms.nearest` of the typed entity id (or row) in the table at the step."""
        from embviz.norms import nearest

        if self._source is None or self.table is None:
            return None
        text = self._query.value.strip().replace(",", "").replace("_", "")
        try:
            query = int(text)
        except ValueError:
            self._neighbours_html.value = message_html(
                f"type an integer entity id (or row), got {self._query.value!r}", ERROR_COLOR
            )
            return None
        try:
            found = nearest(
                self._table_weight(),
                query,
                k=self._k.value,
                metric=self._metric.value,
                vocab=self._vocab(),
            )
        except EmbvizError as exc:  # unknown entity, row out of range, k too large
            self._neighbours_html.value = message_html(str(exc), ERROR_COLOR, "embviz-norms-error")
            return None
        self._data["neighbours"] = found.frame
        self._neighbours_html.value = found._repr_html_()
        return found.frame

    # ------------------------------------------------------------------ internals

    def _fail(self, message: str) -> None:
        self.set_trait("error", message)
        self._message.value = message_html(message, ERROR_COLOR, "embviz-norms-error")

    def _on_unexpected(self, exc: BaseException) -> None:
        self._message.value = message_html(
            f"unexpected error in the panel (traceback below): {exc!r}", ERROR_COLOR
        )

    def _vocab(self) -> Any:
        table = self.table
        if self._config is None or table not in self._config.table_names:
            return None
        path = self._config.table(table).vocab
        if path is None:
            return None
        if table not in self._vocabs:
            from embviz.vocab import load_vocab

            self._vocabs[table] = load_vocab(path)
        return self._vocabs[table]

    def _table_weight(self) -> Any:
        key = (self.table, self.step)
        if key != self._weight_key:
            self._weight = None  # let the previous table go before reading the next
            self._weight = self._source.weight(self.table, self.step)
            self._weight_key = key
        return self._weight

    def _refresh(self) -> None:
        """A new table or step: statistics now, the open tab's view, the others when opened."""
        from embviz.norms import norm_stats

        if self._updating or self._source is None or self.table is None:
            return
        self._data = {}
        self._drawn.clear()
        self._neighbours_html.value = self._fp16_html.value = self._health_html.value = ""
        self._query.placeholder = "entity id" if self._vocab() is not None else "row"
        source = self._source
        initial = source.paths[source.steps[0]] if source.kind == "checkpoints" else None
        try:
            self._data["stats"] = norm_stats(
                source.at(self.step),
                tables=[self.table],
                sample=self._sample,
                initial=initial,
                progress=False,
            )
        except EmbvizError as exc:
            self._fail(str(exc))
            self._stats_html.value = ""
            return
        self.set_trait("error", "")
        where = f" at step {self.step}" if self.step is not None else ""
        self._message.value = message_html(f"{self.table}{where}", OK_COLOR)
        self._stats_html.value = _stats_html(self._data["stats"])
        self._show_visible()

    def _show_visible(self) -> None:
        name = _TABS[self._tabs.selected_index or 0]
        if name != "neighbours":
            self._show(name)

    def _show(self, name: str) -> None:
        """Compute (once per table and step) and draw one view."""
        if self._source is None or self.table is None or "stats" not in self._data:
            return
        key = (self.table, self.step)
        if self._drawn.get(name) == key:
            return
        self._drawn[name] = key
        try:
            getattr(self, f"_draw_{name}")()
        except EmbvizError as exc:
            self._fail(str(exc))

    def _draw_histogram(self) -> None:
        from embviz.norms import norm_histogram
        from embviz.plots.norms import plot_norm_histograms

        hist = norm_histogram(
            self._source.at(self.step),
            tables=[self.table],
            bins=self._bins,
            sample=self._sample,
            progress=False,
        )
        self._data["histogram"] = hist
        view = self._views["histogram"]
        plot_norm_histograms(hist, self._data["stats"], axes=view.ax, tables=[self.table])
        view.refresh()

    def _draw_bands(self) -> None:
        from embviz.norms import norm_history
        from embviz.plots.norms import plot_norm_bands

        view = self._views["bands"]
        if self._source.kind != "checkpoints":
            view.ax.clear()
            view.ax.set_axis_off()
            view.ax.set_title("a checkpoint folder has steps; this source has one state")
            view.refresh()
            return
        table = self.table
        if table not in self._histories:  # every step's statistics: read once per table
            self._histories[table] = norm_history(
                self._source.save_dir,
                tables=[table],
                sample=self._sample,
                initial="first",
                progress=False,
            )
        history = self._data["history"] = self._histories[table]
        plot_norm_bands(history, axes=view.ax, tables=[table])
        # Where the slider is: the histogram, projection and neighbours show this step.
        view.ax.axvline(self.step, color="0.3", linewidth=1, linestyle=":", label="shown step")
        view.refresh()

    def _draw_projection(self) -> None:
        from embviz.projector import Projector

        self._projector = None  # let the previous table's view go first
        self._projection_box.children = []
        self._projector = Projector(
            self._table_weight(),
            vocab=self._vocab(),
            max_points=self._projection_rows,
            progress=False,
        )
        self._data["projection"] = self._projector.frame
        self._projection_box.children = [self._projector.widget]

    def _draw_fp16(self) -> None:
        from embviz.norms import fp16_error_table

        table = self.table
        errors = fp16_error_table(self._source.at(self.step), tables=[table], progress=False)
        self._data["fp16"] = errors
        self._fp16_html.value = errors.to_html(float_format=lambda v: f"{v:.3g}")
        view = self._views["fp16"]
        if self._config is None or table not in self._config.table_names:
            for ax in view.axes:
                ax.clear()
                ax.set_axis_off()
            view.axes[0].set_title("pass config= to see the bytes fp16 saves", fontsize=9)
            view.refresh()
            self._fp16_html.value += message_html(
                "bytes saved: pass the config to NormsPanel", WARN_COLOR
            )
            return
        from embviz.memory import memory_table
        from embviz.plots.norms import plot_fp16_tradeoff

        savings = memory_table(self._config).loc[[table]]
        plot_fp16_tradeoff(errors, savings, axes=view.axes)
        view.refresh()

    def _draw_health(self) -> None:
        from embviz.plots.health import plot_health_history, plot_spectrum
        from embviz.tablehealth import health, health_and_spectra, spectrum

        table, source = self.table, self._source
        initial = source.paths[source.steps[0]] if source.kind == "checkpoints" else None
        now = health(
            source.at(self.step), tables=[table], sample=self._sample, initial=initial,
            progress=False,
        )  # fmt: skip
        self._data["health"] = now
        self._health_html.value = _health_html(now)
        spectrum_view, rank_view = self._views["spectrum"], self._views["rank"]
        if source.kind == "checkpoints":
            if table not in self._health_histories:  # every step: read once per table
                self._health_histories[table] = health_and_spectra(
                    source.save_dir, tables=[table], sample=self._sample, progress=False
                )
            history, spectra = self._health_histories[table]
            self._data["health_history"], self._data["spectra"] = history, spectra
            plot_spectrum(spectra, ax=spectrum_view.ax, table=table)
            plot_health_history(history, ax=rank_view.ax, table=table)
            rank_view.ax.axvline(self.step, color="0.3", linewidth=1, linestyle=":")
        else:
            spectra = spectrum(source.at(None), tables=[table], sample=self._sample,
                               progress=False)  # fmt: skip
            self._data["spectra"] = spectra
            plot_spectrum(spectra, ax=spectrum_view.ax, table=table)
            rank_view.ax.clear()
            rank_view.ax.set_axis_off()
            rank_view.ax.set_title("a checkpoint folder has steps; this source has one state")
        spectrum_view.refresh()
        rank_view.refresh()


_HEALTH_HEADERS = {
    "rows": "rows",
    "dim": "dim",
    "sampled": "rows read",
    "effective_rank": "effective rank",
    "information_abundance": "information abundance",
    "dim_spread": "dim spread",
    "top_energy_share": "top direction",
    "energy_rank_99": "dims for 99%",
    "unchanged_share": "unchanged since step 0",
}


def _health_html(frame: pd.DataFrame) -> str:
    """`embviz.health` rows as a small table (shares in %, ranks to 3 digits)."""
    counts = ("rows", "dim", "sampled", "energy_rank_99")
    return _small_table(frame, _HEALTH_HEADERS, counts, "{:.3g}", name="health")


def _stats_html(stats: pd.DataFrame) -> str:
    """`norm_stats` rows as a small table: counts with separators, norms to 4 digits."""
    headers = {c: label for c, label in _STAT_HEADERS.items() if c in stats.columns}
    return _small_table(stats, headers, ("rows", "sampled"), "{:.4g}", name="stats")


def _small_table(
    frame: pd.DataFrame, headers: dict[str, str], counts: tuple[str, ...], spec: str, name: str
) -> str:
    """``frame``'s ``headers`` columns under their labels, after a ``table`` column of its index.

    ``counts`` get thousands separators, ``*_share`` columns are percentages (blank when
    missing), the others are formatted with ``spec``.
    """
    import pandas as pd

    from embviz.htmltable import count, html_table

    shown = pd.DataFrame({"table": [str(n) for n in frame.index]})
    for column, label in headers.items():
        shown[label] = frame[column].to_numpy()

    def share(value: object) -> str:
        return f"{100 * float(value):.2f}%"  # type: ignore[arg-type]

    formats = {
        label: count if column in counts else share if column.endswith("_share") else spec.format
        for column, label in headers.items()
    }
    return html_table(shown, formats, name=name)

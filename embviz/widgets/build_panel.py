"""`BuildPanel`: build a config's collection on a device and compare measured with predicted bytes.

Wiring only: the check is `embviz.build.preflight`, the build `build_collection` (with its tqdm
progress bar, shown in the panel), the measurement `measure_collection`, and the comparison
`predicted_vs_measured`.
"""

from __future__ import annotations

import gc
import os
import time
import warnings
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from embviz.config import LargeEmbeddingsConfig, load_config
from embviz.errors import EmbvizError
from embviz.widgets._common import ERROR_COLOR, OK_COLOR, WARN_COLOR, guarded, message_html

if TYPE_CHECKING:
    import pandas as pd

    from embviz.build import Preflight
    from embviz.widgets.editor import CollectionEditor

__all__ = ["BuildPanel"]

DEVICES = ("auto", "cpu", "cuda", "meta")

# Columns of predicted_vs_measured shown, with their headers.
_COMPARISON_HEADERS = {
    "predicted_weight_bytes": "predicted weights",
    "measured_weight_bytes": "measured weights",
    "predicted_optimizer_bytes": "predicted optimizer",
    "measured_optimizer_bytes": "measured optimizer",
    "predicted_total_bytes": "predicted total",
    "measured_total_bytes": "measured total",
    "difference_bytes": "difference",
    "allocated_total_bytes": "CUDA allocated",
}


class BuildPanel(widgets.VBox):
    """Build the collection of a config on a device, with a preflight check, and measure it.

    Parameters
    ----------
    source : LargeEmbeddingsConfig, CollectionEditor or path
        What to build. With a `CollectionEditor`, the panel follows the editor's last valid
        config as it changes.
    device : {"auto", "cpu", "cuda", "meta"}
        Initial device choice.
    apply_optimizers : bool
        Apply each table's optimizer in backward (its state is allocated by the measuring step).
    scale : float
        Multiply every table's rows by this, in ``(0, 1]`` (1: the real size).
    progress : bool
        Show `build_collection`'s progress bar in the panel.

    Attributes
    ----------
    collection : torchrec.EmbeddingBagCollection or None
        The last collection built (observable trait).
    comparison : pandas.DataFrame or None
        `embviz.measure.predicted_vs_measured` of the last build (None on ``meta``).
    error : str
        The current refusal or build error, ``""`` when none (observable trait).
    """

    collection = traitlets.Any(None, read_only=True)
    error = traitlets.Unicode("", read_only=True)

    def __init__(
        self,
        source: LargeEmbeddingsConfig | CollectionEditor | str | os.PathLike[str],
        *,
        device: str = "auto",
        apply_optimizers: bool = True,
        scale: float = 1.0,
        progress: bool = True,
    ):
        super().__init__()
        self.add_class("embviz-build-panel")
        self._editor = None
        if isinstance(source, LargeEmbeddingsConfig):
            self._config = source
        elif isinstance(source, (str, os.PathLike)):
            self._config = load_config(source)
        else:  # a CollectionEditor (duck-typed to keep the import light)
            self._editor = source
            self._config = source.config
        self._progress = progress
        self._preflight: Preflight | None = None
        self._measured: pd.DataFrame | None = None
        self._comparison: pd.DataFrame | None = None
        self._built_config: LargeEmbeddingsConfig | None = None

        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        self._exceptions.add_class("embviz-exceptions")
        guard = guarded(self._exceptions, self._on_unexpected)

        self._device = widgets.Dropdown(description="device", options=list(DEVICES), value=device)
        self._apply = widgets.Checkbox(
            value=apply_optimizers, description="apply optimizers", indent=False
        )
        self._scale = widgets.FloatText(
            value=scale,
            description="scale rows",
            tooltip="multiply every table's rows by this, in (0, 1]",
            layout=widgets.Layout(width="170px"),
        )
        self._build_button = widgets.Button(
            description="Build", icon="cubes", button_style="primary"
        )
        self._build_button.add_class("embviz-build")
        self._preflight_html = widgets.HTML()
        self._preflight_html.add_class("embviz-preflight")
        self._status = widgets.HTML()
        self._status.add_class("embviz-build-status")
        self._progress_output = widgets.Output()
        self._warnings_html = widgets.HTML()
        self._comparison_html = widgets.HTML()
        self._comparison_html.add_class("embviz-build-comparison")
        for control in (self._device, self._apply, self._scale):
            control.observe(guard(lambda _: self.check()), names="value")
        self._build_button.on_click(guard(lambda _: self.build()))
        if self._editor is not None:
            self._editor.observe(guard(self._on_editor_config), names="config")
        self.children = [
            widgets.HBox([self._device, self._apply, self._scale, self._build_button]),
            self._preflight_html,
            self._progress_output,
            self._status,
            self._warnings_html,
            self._comparison_html,
            self._exceptions,
        ]
        self.check()

    # ------------------------------------------------------------------ public API

    @property
    def config(self) -> LargeEmbeddingsConfig:
        """The config a build would use (the editor's last valid one when linked)."""
        return self._config

    @property
    def controls(self) -> dict[str, widgets.Widget]:
        """The panel's controls.

        Keys: ``device`` (Dropdown), ``apply_optimizers`` (Checkbox), ``scale`` (FloatText),
        ``build`` (Button).
        """
        return {
            "device": self._device,
            "apply_optimizers": self._apply,
            "scale": self._scale,
            "build": self._build_button,
        }

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The display widgets.

        Keys: ``preflight``, ``status``, ``warnings`` (the build's warnings) and
        ``comparison`` (HTML); ``progress`` and ``exceptions`` (Output).
        """
        return {
            "preflight": self._preflight_html,
            "status": self._status,
            "warnings": self._warnings_html,
            "comparison": self._comparison_html,
            "progress": self._progress_output,
            "exceptions": self._exceptions,
        }

    @property
    def preflight(self) -> Preflight | None:
        """The last successful `embviz.build.preflight` (None when it refused or failed)."""
        return self._preflight

    @property
    def measured(self) -> pd.DataFrame | None:
        """`embviz.measure.measure_collection` of the last build (None on ``meta``)."""
        return self._measured

    @property
    def comparison(self) -> pd.DataFrame | None:
        """`embviz.measure.predicted_vs_measured` of the last build (None on ``meta``)."""
        return self._comparison

    def check(self) -> Preflight | None:
        """Run the preflight for the current choices and show what it says."""
        from embviz.build import preflight
        from embviz.memory import human_bytes

        self._preflight = None
        try:
            result = preflight(
                self._config,
                self._device.value,
                apply_optimizers=self._apply.value,
                scale=self._scale_value(),
            )
        except EmbvizError as exc:  # BuildRefused, BuildError (no CUDA, bad scale)
            self._set_error(str(exc))
            self._preflight_html.value = message_html(str(exc), ERROR_COLOR, "embviz-refused")
            return None
        self._preflight = result
        self._set_error("")
        needed = human_bytes(result.needed_bytes)
        if result.usable_bytes is None:
            text = f"{result.device}: shapes only, nothing allocated (a real build needs {needed})"
        else:
            text = (
                f"{result.device}: needs {needed}; {human_bytes(result.free_bytes)} free, a build "
                f"may use {human_bytes(result.usable_bytes)}: fits"
            )
        self._preflight_html.value = message_html(text, OK_COLOR, "embviz-fits")
        return result

    def build(self) -> Any:
        """Build (after the preflight), measure, and compare with the prediction.

        Returns the collection, or None when the build was refused or failed (the message is
        shown and in `error`).
        """
        from embviz.build import build_collection
        from embviz.measure import measure_collection, predicted_vs_measured
        from embviz.memory import human_bytes

        if self.check() is None:
            self._status.value = message_html("not built: see above", ERROR_COLOR)
            return None
        # Let the previous collection go first, so two never sit in memory together.
        self.set_trait("collection", None)
        self._measured = self._comparison = None
        self._comparison_html.value = self._warnings_html.value = ""
        gc.collect()
        cfg, scale = self._config, self._scale_value()
        self._status.value = message_html(f"building {len(cfg.tables)} tables ...", "")
        self._progress_output.clear_output()
        start = time.perf_counter()
        try:
            # Warnings of the build (BuildWarning: NaN traps, pretrained tables skipped) are
            # shown in the panel: a callback's warnings would otherwise go to the kernel log.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with self._progress_output:
                    collection = build_collection(
                        cfg,
                        device=self._device.value,
                        apply_optimizers=self._apply.value,
                        scale=scale,
                        progress=self._progress,
                    )
            built_s = time.perf_counter() - start
            self._warnings_html.value = message_html(
                "\n".join(f"{w.category.__name__}: {w.message}" for w in caught),
                WARN_COLOR,
                "embviz-build-warnings",
            )
            if str(self._preflight.device) == "meta":
                self.set_trait("collection", collection)
                self._status.value = message_html(
                    f"built {len(cfg.tables)} tables on meta in {built_s:.1f} s "
                    "(shapes only: nothing to measure)",
                    OK_COLOR,
                    "embviz-built",
                )
                return collection
            measured = measure_collection(collection)
            comparison = predicted_vs_measured(cfg, measured, scale=scale)
        except EmbvizError as exc:
            self._set_error(str(exc))
            self._status.value = message_html(str(exc), ERROR_COLOR, "embviz-build-error")
            return None
        self._measured, self._comparison = measured, comparison
        self._built_config = cfg
        self.set_trait("collection", collection)
        predicted = int(comparison["predicted_total_bytes"].sum())
        actual = int(comparison["measured_total_bytes"].sum())
        verdict = "exactly as predicted" if predicted == actual else "differs from the prediction"
        self._status.value = message_html(
            f"built {len(cfg.tables)} tables on {self._preflight.device} in {built_s:.1f} s: "
            f"measured {human_bytes(actual)} ({actual:,} bytes), predicted "
            f"{human_bytes(predicted)}: {verdict}",
            OK_COLOR if predicted == actual else WARN_COLOR,
            "embviz-built",
        )
        self._comparison_html.value = _comparison_html(comparison)
        return collection

    # ------------------------------------------------------------------ internals

    def _scale_value(self) -> float | None:
        value = self._scale.value
        return None if value == 1 else value

    def _set_error(self, message: str) -> None:
        self.set_trait("error", message)

    def _on_editor_config(self, change: dict[str, Any]) -> None:
        self._config = change["new"]
        self.check()
        if self._built_config is not None and self._built_config != self._config:
            self._status.value = message_html(
                "the editor's config changed since this build: press Build again",
                WARN_COLOR,
                "embviz-build-stale",
            )

    def _on_unexpected(self, exc: BaseException) -> None:
        self._status.value = message_html(
            f"unexpected error in the panel (traceback below): {exc!r}", ERROR_COLOR
        )


def _comparison_html(frame: pd.DataFrame) -> str:
    """The comparison as a small table: human sizes, exact bytes in tooltips."""
    import pandas as pd

    from embviz.htmltable import html_table, human

    columns = [c for c in _COMPARISON_HEADERS if c in frame.columns]
    labels = [_COMPARISON_HEADERS[c] for c in columns]
    shown = pd.DataFrame({"table": [str(n) for n in frame.index]})
    titles = pd.DataFrame(index=shown.index)
    for column, label in zip(columns, labels, strict=True):
        values = [None if pd.isna(v) else int(v) for v in frame[column]]  # NA: no CUDA figure
        shown[label] = pd.Series(values, dtype=object)
        titles[label] = ["" if v is None else f"{v:,} bytes" for v in values]

    def signed(value: object) -> str:
        delta = int(value)  # type: ignore[call-overload]
        return "0" if delta == 0 else ("+" if delta > 0 else "-") + human(abs(delta))

    def size(value: object) -> str:
        return human(abs(int(value)))  # type: ignore[call-overload]

    formats = dict.fromkeys(labels, size)
    formats[_COMPARISON_HEADERS["difference_bytes"]] = signed
    table = html_table(
        shown, formats, name="comparison", titles=titles, table_class="embviz-comparison"
    )
    return f'<div style="max-height:320px; overflow:auto">{table}</div>'

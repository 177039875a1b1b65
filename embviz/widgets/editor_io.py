"""Loading and exporting the editor's config: YAML upload, a path, the export text and link.

`IOMixin` is the part of `CollectionEditor` that reads configs (errors shown beside the load
controls, the editor keeping its tables) and writes the last valid one out.
"""

from __future__ import annotations

import base64
import os
import warnings
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from embviz.config import (
    ConfigError,
    FusedKernelWarning,
    LargeEmbeddingsConfig,
    dump_config,
    load_config,
    parse_config,
)
from embviz.widgets._common import ERROR_COLOR, OK_COLOR, WARN_COLOR, message_html

__all__ = ["IOMixin"]


class IOMixin:
    """YAML in and out for `CollectionEditor` (see there)."""

    _model: Any
    _guard: Any
    error: str

    def _build_io(self, key: str | None) -> None:
        self._upload = widgets.FileUpload(accept=".yaml,.yml", multiple=False, description="YAML")
        self._path = widgets.Text(placeholder="path/to/config.yaml", description="path")
        self._key = widgets.Text(
            value=key or "",
            placeholder="section, e.g. model.embeddings",
            description="key",
            layout=widgets.Layout(width="260px"),
        )
        self._load_button = widgets.Button(description="Load", icon="folder-open")
        self._load_message = widgets.HTML()
        self._load_message.add_class("embviz-load-message")
        self._upload.observe(self._guard(self._on_upload), names="value")
        self._load_button.on_click(self._guard(self._on_load_path))
        self._load_bar = widgets.HBox(
            [self._upload, self._path, self._key, self._load_button, self._load_message]
        )
        self._add_button = widgets.Button(description="Add table", icon="plus")
        self._add_button.on_click(self._guard(lambda _: self.add_table()))
        self._export_button = widgets.Button(description="Export YAML", icon="download")
        self._export_button.on_click(self._guard(lambda _: self.export_yaml()))
        self._download = widgets.HTML()
        self._yaml = widgets.Textarea(
            layout=widgets.Layout(width="100%", height="260px", display="none")
        )
        self._yaml.add_class("embviz-yaml")

    @property
    def io_controls(self) -> dict[str, widgets.Widget]:
        """``upload``, ``path``, ``key``, ``yaml`` (the export Textarea), ``message``."""
        return {
            "upload": self._upload,
            "path": self._path,
            "key": self._key,
            "yaml": self._yaml,
            "message": self._load_message,
        }

    def load(self, cfg: LargeEmbeddingsConfig | str | os.PathLike[str], key: str | None = None):
        """Replace every row with ``cfg``'s tables (a path is read with `embviz.load_config`)."""
        if not isinstance(cfg, LargeEmbeddingsConfig):
            cfg = load_config(cfg, key=key)
        self._model.load(cfg)
        self._refresh_all()

    def to_yaml(self) -> str:
        """The last valid config as YAML (`embviz.dump_config`): hidden fields included."""
        return dump_config(self.config)

    def export_yaml(self) -> str:
        """Show the YAML in the text area and as a download link; return it."""
        text = self.to_yaml()
        self._yaml.value = text
        self._yaml.layout.display = None
        payload = base64.b64encode(text.encode()).decode()
        self._download.value = (
            f'<a download="embeddings.yaml" href="data:text/yaml;base64,{payload}">'
            "download embeddings.yaml</a>"
        )
        note = "exported the last valid config" + (
            " (the current input has problems, see above)" if self.error else ""
        )
        self._load_message.value = message_html(note, WARN_COLOR if self.error else OK_COLOR)
        return text

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        name = upload.get("name", "upload")
        try:
            text = bytes(upload["content"]).decode("utf-8")
        except UnicodeDecodeError as exc:
            self._show_load_error(f"{name}: not UTF-8 text (byte at offset {exc.start})")
            return
        self._load_from(lambda: parse_config(text, self._key.value.strip() or None, source=name))

    def _on_load_path(self, _: Any) -> None:
        path = self._path.value.strip()
        if not path:
            self._show_load_error("type the path of a YAML file first")
            return
        self._load_from(
            lambda: load_config(Path(path).expanduser(), self._key.value.strip() or None)
        )

    def _load_from(self, read) -> None:
        # A loaded table's FusedKernelWarning shows in its row when the row is next validated.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusedKernelWarning)
            try:
                cfg = read()
            except ConfigError as exc:  # names the file, the place in it, and the problem
                self._show_load_error(str(exc))
                return
        self.load(cfg)
        self._load_message.value = message_html(
            f"loaded {len(cfg.tables)} tables", OK_COLOR, "embviz-load-ok"
        )

    def _show_load_error(self, message: str) -> None:
        self._load_message.value = message_html(
            f"not loaded (the editor keeps its tables): {message}", ERROR_COLOR, "embviz-load-error"
        )

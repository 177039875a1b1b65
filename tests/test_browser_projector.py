"""The projector in a real browser: JupyterLab + Debian's chromium (WebGL by SwiftShader).

A temporary notebook displays ``embviz.Projector`` for a 200,000-row table with a vocabulary.
The test waits for jupyter-scatter's WebGL canvas, then moves the mouse over the points until
the kernel-side hover line names a row and its entity id (the browser set the widget's
``hovering`` trait), clicks a point and waits for the kernel's answer: "1 row selected" and the
point's neighbours, labelled by entity. No page errors, no Python tracebacks. A screenshot goes
to tests/artifacts/projector.png (and docs/projector.png, the README's, with
EMBVIZ_UPDATE_DOCS=1).

Skipped when chromium or playwright is missing, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM_FLAGS, _require_browser, jupyter_lab

from conftest import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "projector.png"
NOTEBOOK = "projector.ipynb"
# WebGL without a GPU: Chromium's software renderer (DESIGN.md section 3).
WEBGL_FLAGS = [f for f in CHROMIUM_FLAGS if f != "--disable-gpu"] + [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
ROWS = 200_000
CELL = f"""\
import numpy as np
import torch

import embviz

# Two clusters of rows with spread-out norms; every other row has an entity id.
generator = torch.Generator().manual_seed(0)
weight = torch.randn({ROWS}, 16, generator=generator)
weight *= torch.exp(0.5 * torch.randn({ROWS}, 1, generator=generator))
weight[: {ROWS} // 2] += 2.0
vocab = {{10**9 + row: row for row in range(0, {ROWS}, 2)}}
projector = embviz.Projector(weight, vocab=vocab, k=5)
projector
"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _notebook(folder: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(CELL)]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, folder / NOTEBOOK)


def test_projector_in_jupyterlab():
    from playwright.sync_api import sync_playwright

    chromium = _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="embviz-projector-") as folder:
        _notebook(Path(folder))
        with jupyter_lab(Path(folder)) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=WEBGL_FLAGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                page.set_default_timeout(180_000)
                page.goto(f"{url}/lab/tree/{NOTEBOOK}")
                page.wait_for_function(
                    "() => window.jupyterapp && document.querySelector('.jp-Notebook')"
                )
                with contextlib.suppress(Exception):
                    page.locator(".jp-Dialog .jp-mod-accept").click(timeout=3000)
                page.wait_for_function(
                    "() => { const w = window.jupyterapp.shell.currentWidget;"
                    " return w && w.sessionContext && w.sessionContext.session &&"
                    " w.sessionContext.session.kernel &&"
                    " w.sessionContext.session.kernel.status === 'idle'; }"
                )
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                projector = page.locator(".embviz-projector")
                projector.wait_for()
                canvas = projector.locator("canvas").first
                canvas.wait_for()
                info = projector.locator(".embviz-projector-info").inner_text()
                assert f"All {ROWS:,} rows." in info and "PCA fitted on all" in info
                # Let the points arrive and draw (SwiftShader is slow).
                page.wait_for_timeout(5_000)
                box = canvas.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 200, box

                # Hover: sweep the mouse over the middle of the canvas until the kernel names
                # the point under it.
                hover = projector.locator(".embviz-projector-hover")
                found = None
                for i in range(40):
                    x = box["x"] + box["width"] * (0.35 + 0.3 * ((i * 7) % 40) / 40)
                    y = box["y"] + box["height"] * (0.35 + 0.3 * ((i * 13) % 40) / 40)
                    page.mouse.move(x, y, steps=4)
                    with contextlib.suppress(Exception):
                        hover.filter(has_text="hover: row").wait_for(timeout=1_500)
                        found = (x, y)
                        break
                assert found is not None, "no point reported under the mouse"
                text = hover.inner_text()
                assert re.fullmatch(
                    r"hover: row [\d,]+, (entity 10000\d+|no entity id), norm [\d.e+-]+", text
                ), text
                row = int(re.search(r"row ([\d,]+)", text).group(1).replace(",", ""))
                assert ("no entity id" in text) == (row % 2 == 1)
                if row % 2 == 0:
                    assert f"entity {10**9 + row}" in text

                # Click the hovered point: selected in the kernel, its neighbours shown.
                page.mouse.click(*found)
                selection = projector.locator(".embviz-projector-selection")
                selection.filter(has_text="1 row selected").wait_for(timeout=60_000)
                neighbours = projector.locator(".embviz-projector-neighbours")
                neighbours.filter(has_text="5 nearest to row").wait_for(timeout=60_000)
                assert neighbours.locator("tbody tr").count() == 5
                projector.screenshot(path=str(ARTIFACTS / "projector.png"))
                if os.environ.get("EMBVIZ_UPDATE_DOCS") == "1":
                    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                    shutil.copy(ARTIFACTS / "projector.png", DOCS_SCREENSHOT)

                errors = page.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                )
                texts = [errors.nth(i).inner_text() for i in range(errors.count())]
                assert not [t for t in texts if re.search(r"Traceback|Error", t)], texts
                assert projector.locator(".embviz-exceptions pre").count() == 0
            finally:
                browser.close()
    assert not page_errors, page_errors

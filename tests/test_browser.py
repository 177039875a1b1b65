"""The tuning notebook in a real browser: JupyterLab + Debian's chromium through Playwright.

Starts JupyterLab on 127.0.0.1 (free port, empty token, temporary runtime/config/workspace
folders) on a temporary copy of notebooks/ (so nothing is ever saved into the committed
notebooks), opens 01_tune_table_sizes.ipynb, runs every cell, then types into the
CollectionEditor: a new ``num_embeddings`` must change the displayed total to what
`memory_table` gives, and an invalid value must show its error at the control and in the status
line. Screenshots go to tests/artifacts/ (and to docs/editor.png, the README's, with
EMBVIZ_UPDATE_DOCS=1).

What it relies on in the notebook: a cell that displays ``embviz.CollectionEditor(cfg)`` for
the bundled ranker config (``cfg = embviz.load_config(embviz.example("ranker"))``), with the
ranker's first table (``user_id``, 100,000,000 rows) in the first row.

Skipped when chromium or playwright is missing, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import embviz
from embviz.memory import memory_table, totals

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_tune_table_sizes.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "editor.png"
# DESIGN.md section 3: the flags that work for Debian's chromium in containers.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST_TABLE = "user_id"
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 120

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> str:
    """Chromium's path; skip (or fail under CI=true) when it or playwright is missing."""
    missing = []
    chromium = shutil.which("chromium")
    if chromium is None:
        missing.append("chromium (`make browser` installs Debian's)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return chromium


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(notebooks: Path) -> Iterator[str]:
    """Run JupyterLab on ``notebooks``; yield its base URL; stop it afterwards."""
    home = Path(tempfile.mkdtemp(prefix="embviz-lab-"))
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={notebooks}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    # No "get Jupyter news?" toast over the screenshot.
    labconfig = home / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}'
    )
    log = (home / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (home / "server.log").read_text()[-3000:]
                raise RuntimeError(f"JupyterLab did not start:\n{tail}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def notebook_page(chromium: str, viewport: tuple[int, int] = (1800, 2300)) -> Iterator:
    """The tuning notebook open in chromium, every cell run, the editor displayed."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="embviz-notebooks-") as folder:
        shutil.copy(ROOT / "notebooks" / NOTEBOOK, folder)
        with jupyter_lab(Path(folder)) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_FLAGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                page.set_default_timeout(RUN_TIMEOUT_S * 1000)
                page.goto(f"{url}/lab/tree/{NOTEBOOK}")
                page.wait_for_function(
                    "() => window.jupyterapp && document.querySelector('.jp-Notebook')"
                )
                # A kernel dialog may appear on the first open: accept it.
                dialog = page.locator(".jp-Dialog .jp-mod-accept")
                with contextlib.suppress(Exception):
                    dialog.click(timeout=3000)
                page.wait_for_function(
                    "() => { const w = window.jupyterapp.shell.currentWidget;"
                    " return w && w.sessionContext && w.sessionContext.session &&"
                    " w.sessionContext.session.kernel &&"
                    " w.sessionContext.session.kernel.status === 'idle'; }"
                )
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.locator(".embviz-editor .embviz-total-bytes").wait_for()
                yield page
            finally:
                browser.close()


def _total_bytes(page) -> int:
    return int(page.locator(".embviz-total-bytes").get_attribute("data-bytes"))


def _wait_total(page, expected: int) -> None:
    page.wait_for_function(
        "(n) => { const e = document.querySelector('.embviz-total-bytes');"
        " return e && e.dataset.bytes === String(n); }",
        arg=str(expected),
        timeout=30_000,
    )


def _expected_total(rows: int) -> int:
    """What `memory_table` gives for the ranker with the first table's rows changed."""
    cfg = embviz.load_config(embviz.example("ranker"))
    table = cfg.tables[0].model_copy(update={"num_embeddings": rows})
    changed = cfg.model_copy(update={"tables": [table, *cfg.tables[1:]]})
    return int(totals(memory_table(changed))["total_bytes"])


def _rows_input(page):
    return page.locator(".embviz-row").first.locator(".embviz-num-embeddings input")


def _wait_kernel_idle(page) -> None:
    # Let the kernel finish redrawing the figures of the previous edit, so the keystroke is
    # timed on its own.
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'idle'"
    )
    page.wait_for_timeout(500)
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'idle'"
    )


# Timed inside the page: from the keydown event to the moment the total shows the new bytes
# (a MutationObserver on the total widget), so the test driver's own latency is not counted.
_ARM_TIMER = """(expected) => {
  window.__embvizKeydown = undefined; window.__embvizShown = undefined;
  document.addEventListener('keydown', () => {
    if (window.__embvizKeydown === undefined) window.__embvizKeydown = performance.now();
  }, {capture: true, once: true});
  const total = document.querySelector('.embviz-total');
  const observer = new MutationObserver(() => {
    const shown = total.querySelector('.embviz-total-bytes');
    if (shown && shown.dataset.bytes === expected) {
      window.__embvizShown = performance.now(); observer.disconnect();
    }
  });
  observer.observe(total, {subtree: true, childList: true, attributes: true});
}"""


_FIGURE_PIXELS = "() => document.querySelector('.embviz-memory-figure canvas').toDataURL()"


def type_one_keystroke(page) -> tuple[float, float]:
    """Set the first table to "5,000,000" rows, then time one more "0" to the new total.

    Returns the seconds from the keydown to the total showing 50,000,000 rows' bytes, and to
    the memory figure (an ipympl canvas, redrawn once typing pauses) showing new pixels.
    """
    rows_input = _rows_input(page)
    rows_input.fill("5,000,000")
    _wait_total(page, _expected_total(5_000_000))
    expected = _expected_total(50_000_000)
    rows_input.press("End")
    _wait_kernel_idle(page)
    pixels = page.evaluate(_FIGURE_PIXELS)
    page.evaluate(_ARM_TIMER, str(expected))
    rows_input.press("0")  # "5,000,0000": separators are ignored, so 50,000,000 rows
    _wait_total(page, expected)
    page.wait_for_function("() => window.__embvizShown !== undefined")
    total_ms = page.evaluate("() => window.__embvizShown - window.__embvizKeydown")
    page.wait_for_function(
        f"(before) => ({_FIGURE_PIXELS})() !== before", arg=pixels, timeout=30_000
    )
    figure_ms = page.evaluate("() => performance.now() - window.__embvizKeydown")
    return total_ms / 1000, figure_ms / 1000


def keystroke_latency() -> tuple[float, float]:
    """For benchmarks/bench_widgets.py: seconds from a keystroke to the new total and figure."""
    with notebook_page(_require_browser()) as page:
        type_one_keystroke(page)  # warm: first edit also compiles the page's layout paths
        _rows_input(page).fill("100,000,000")
        _wait_total(page, _expected_total(100_000_000))
        return type_one_keystroke(page)


def test_editor_in_jupyterlab():
    chromium = _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with notebook_page(chromium) as page:
        assert _total_bytes(page) == _expected_total(100_000_000)
        first_name = page.locator(".embviz-row").first.locator(".embviz-name input")
        assert first_name.input_value() == FIRST_TABLE

        seconds, figure_seconds = type_one_keystroke(page)
        timing = (
            f"keystroke -> updated total {seconds * 1e3:.0f} ms, -> redrawn memory figure "
            f"{figure_seconds * 1e3:.0f} ms (JupyterLab + chromium, ranker config)"
        )
        print(f"\n{timing}")
        (ARTIFACTS / "browser_keystroke.txt").write_text(timing + "\n")
        assert "50,000,000" in page.locator(".embviz-memory-table").inner_text()
        _rows_input(page).fill("50,000,000")  # same rows, written as the editor shows them
        _wait_kernel_idle(page)
        page.locator(".embviz-editor").screenshot(path=str(ARTIFACTS / "editor.png"))
        if os.environ.get("EMBVIZ_UPDATE_DOCS") == "1":  # refresh the README's screenshot
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copy(ARTIFACTS / "editor.png", DOCS_SCREENSHOT)
        assert seconds < 5, "far slower than the 1 s goal: see benchmarks/bench_widgets.py"

        # An invalid value: error at the control and in the status line, total kept.
        total = _total_bytes(page)
        _rows_input(page).fill("12x")
        message = "must be an integer, got '12x' (str)"
        status = page.locator(".embviz-status")
        status.filter(has_text=message).wait_for(timeout=30_000)
        assert "last valid" in status.inner_text()
        marked = page.locator(".embviz-row").first.locator(".embviz-num-embeddings")
        assert "embviz-invalid" in (marked.get_attribute("class") or "")
        row_message = page.locator(".embviz-row").first.locator(".embviz-row-message")
        assert message in row_message.inner_text()
        assert _rows_input(page).input_value() == "12x"  # what was typed stays
        assert _total_bytes(page) == total
        page.locator(".embviz-editor").screenshot(path=str(ARTIFACTS / "editor_error.png"))

        # No Python exception reached the page.
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        texts = [errors.nth(i).inner_text() for i in range(errors.count())]
        assert not [t for t in texts if re.search(r"Traceback|Error", t)], texts

"""Every notebook is committed without outputs, runs top to bottom, and shows what it claims.

Checked notebooks (notebook metadata ``{"embviz": {"checked": true}}``) are held to more:

* a code cell draws exactly as many static figures (``image/png`` outputs) as its metadata says
  (``{"embviz": {"figures": N}}``; no key means none), so a missing or doubled figure fails;
  figures inside widgets (Output widgets) are not counted: the browser tests cover widgets;
* every figure displayed, in a cell or in an Output widget, has a title, labels on its shown axes
  and no legend over drawn data. The kernel records this itself (``figure_audit.py``, a display
  formatter installed at kernel start) from the Figure object it drew;
* a number in a markdown cell is a constant of a number format or of a rule (`FORMAT_CONSTANTS`),
  never a measured value: those are printed by code or shown as Markdown built from them.

The kernel runs with the inline backend, as in JupyterLab (the test session itself uses Agg).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT
from figure_audit import AUDIT_MIME

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
AUDIT_HOOK = Path(__file__).with_name("figure_audit.py")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# Numbers prose may state: constants of the number formats and of the memory rules, which no run
# of a notebook can change. Keys are written as the scanner normalises them (no separators).
FORMAT_CONSTANTS = {
    "0": "zero (empty bags, ids from 0)",
    "1": "one",
    "2": "bytes of an fp16 number; Adam's two moments",
    "4": "bytes of an fp32 number; FBGEMM's dim % 4 rule",
    "11": "significant bits of fp16",
    "16": "torchrec's row alignment (bytes); NVTabular's smallest dim",
    "512": "NVTabular's largest dim",
    "600": "fastai's largest dim",
    "1.6": "fastai's dim rule: min(600, round(1.6 n^0.56))",
    "0.56": "fastai's dim rule: min(600, round(1.6 n^0.56))",
    "0.25": "the fourth-root dim rules (Google, Merlin)",
    "4000000": "rows log_ebc_norms samples per rank at most",
    "2⁻¹¹": "fp16's unit roundoff",
    "2⁻¹⁴": "smallest normal fp16",
    "2⁻²⁴": "smallest subnormal fp16",
    "2⁻²⁵": "half of it: the largest value that rounds to 0",
    "65504": "largest finite fp16",
}

_SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_NUMBER = re.compile(
    rf"(?<![A-Za-z_\d.{_SUPERSCRIPT}])"  # not inside an identifier (fp16, log10, 01_tune)
    rf"\d+(?:[,_]\d{{3}})*(?:\.\d+)?"  # 424,241 / 1_000_000 / 0.05
    rf"(?:[eE][-+]?\d+|\s?[·×x]\s?10[⁻⁺]?[{_SUPERSCRIPT}]+|[⁻⁺]?[{_SUPERSCRIPT}]+)?"  # 6·10⁻⁸, 2⁻²⁴
    rf"(?![A-Za-z_\d{_SUPERSCRIPT}])"
)
_SKIPPED = [
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"^\s*#+\s*\d+\.", re.MULTILINE),  # section numbers
    re.compile(r"^\s*\d+\.\s", re.MULTILINE),  # ordered list items
    re.compile(r"#\d+\b"),  # issue / pull-request references
]


def markdown_numbers(text: str) -> list[str]:
    """Numbers written in markdown `text`, separators removed, in order."""
    for pattern in _SKIPPED:
        text = pattern.sub(" ", text)
    return [re.sub(r"[,_\s]", "", match) for match in _NUMBER.findall(text)]


def _checked(notebook: Any) -> bool:
    return bool(notebook.metadata.get("embviz", {}).get("checked"))


@cache
def _executed(path: Path) -> Any:
    """`path` run top to bottom in a fresh kernel with the inline backend and the figure audit."""
    notebook = nbformat.read(path, as_version=4)
    install = (
        "import importlib.util as _u; "
        f"_s = _u.spec_from_file_location('figure_audit', {str(AUDIT_HOOK)!r}); "
        "_m = _u.module_from_spec(_s); _s.loader.exec_module(_m); _m.install(); "
        "del _u, _s, _m"
    )
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        extra_arguments=[f"--IPKernelApp.exec_lines={install}"],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        client.execute()
    return notebook


def _images(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if "image/png" in o.get("data", {})]


def _widget_outputs(notebook: Any) -> list[dict]:
    """Outputs captured by Output widgets, from the widget state nbclient saves."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [
        output
        for model in state.values()
        if model.get("model_name") == "OutputModel"
        for output in model.get("state", {}).get("outputs", [])
    ]


def figure_problems(audit: dict) -> list[str]:
    """What a figure's audit record says is missing or covered; empty when the figure is fine."""
    if "error" in audit:
        return [f"audit failed: {audit['error']}"]
    problems = []
    for number, ax in enumerate(audit["axes"]):
        if not ax["shown"]:
            continue
        where = f"axes {number}"
        if ax["colorbar"]:
            if not (ax["xlabel"] or ax["ylabel"]):
                problems.append(f"{where}: colorbar without a label")
            continue
        if not ax["has_data"]:
            continue
        if not (ax["title"] or audit["suptitle"]):
            problems.append(f"{where}: no title")
        for axis in ("x", "y"):
            if ax[f"{axis}_shown"] and not ax[f"{axis}label"]:
                problems.append(f"{where}: no {axis} label")
        if ax["legend_covers"]:
            problems.append(f"{where}: legend covers {ax['legend_covers']}")
    if audit["figure_legend_covers"]:
        problems.append(f"figure legend covers {audit['figure_legend_covers']}")
    return problems


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_runs_top_to_bottom(path: Path):
    notebook = _executed(path)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors


CHECKED = [p for p in NOTEBOOKS if _checked(nbformat.read(p, as_version=4))]


def test_the_three_notebooks_are_checked():
    # The checks below apply to notebooks marked as checked.
    for name in (
        "01_tune_table_sizes.ipynb",
        "02_inspect_logged_embeddings.ipynb",
        "03_teaching_embedding_bags.ipynb",
    ):
        assert ROOT / "notebooks" / name in CHECKED


@pytest.mark.slow
@pytest.mark.parametrize("path", CHECKED, ids=[p.name for p in CHECKED])
def test_each_figure_cell_draws_its_figures_once(path: Path):
    notebook = _executed(path)
    drawn = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        expected = cell.metadata.get("embviz", {}).get("figures", 0)
        drawn[index] = (expected, len(_images(cell.outputs)))
    wrong = {index: pair for index, pair in drawn.items() if pair[0] != pair[1]}
    assert not wrong, f"cell: (figures expected, images drawn): {wrong}"
    assert any(expected for expected, _ in drawn.values())


@pytest.mark.slow
@pytest.mark.parametrize("path", CHECKED, ids=[p.name for p in CHECKED])
def test_figures_have_titles_labels_and_clear_legends(path: Path):
    notebook = _executed(path)
    images = [
        (f"cell {index}", output)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        for output in _images(cell.outputs)
    ]
    images += [("an Output widget", output) for output in _images(_widget_outputs(notebook))]
    assert images
    problems = {}
    for where, output in images:
        audit = output["data"].get(AUDIT_MIME)
        found = figure_problems(audit) if audit else ["not a matplotlib figure (no audit)"]
        if found:
            problems.setdefault(where, []).extend(found)
    assert not problems, problems


@pytest.mark.parametrize("path", CHECKED, ids=[p.name for p in CHECKED])
def test_markdown_states_no_measured_number(path: Path):
    notebook = nbformat.read(path, as_version=4)
    typed = {
        index: [n for n in markdown_numbers(cell.source) if n not in FORMAT_CONSTANTS]
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "markdown"
    }
    typed = {index: numbers for index, numbers in typed.items() if numbers}
    assert not typed, f"numbers typed in markdown (print them from code): {typed}"


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("anything under 6·10⁻⁸ becomes 0", ["6·10⁻⁸", "0"]),
        ("needs about 34 GiB; 2⁻²⁴ ≈ 5.96e-08 and 0.05%", ["34", "2⁻²⁴", "5.96e-08", "0.05"]),
        ("`user` 424,241 x 4 and 1_000_000 rows", ["424241", "4", "1000000"]),
        ("fp16, log10, 01_tune_table_sizes.ipynb, PR #4142, [x](a/3.html)", []),
        ("## 5. What fp16 does\n1. first", []),
    ],
)
def test_markdown_scanner_finds_typed_numbers(text: str, numbers: list[str]):
    assert markdown_numbers(text) == numbers


def _figure(draw) -> Any:
    from matplotlib.figure import Figure

    from figure_audit import audit

    figure = Figure(figsize=(5, 3))
    ax = figure.subplots()
    draw(ax)
    return audit(figure)


def test_figure_audit_sees_a_legend_over_data_and_missing_labels():
    def covered(ax):
        ax.plot([0, 1], [1, 1], label="flat at the top")
        ax.bar(["a", "b"], [0.2, 0.9], label="bars")
        ax.legend(loc="upper left")

    problems = figure_problems(_figure(covered))
    assert "axes 0: no title" in problems and "axes 0: no x label" in problems
    assert any("legend covers" in p and "flat at the top" in p for p in problems)

    def clear(ax):
        ax.plot([0, 1], [0, 0.5], label="low line")
        ax.set_ylim(0, 2)
        ax.legend(loc="upper right")
        ax.set(title="t", xlabel="x (s)", ylabel="y (bytes)")

    assert figure_problems(_figure(clear)) == []

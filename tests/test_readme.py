"""The README shows what exists: its commands, its CLI and its generated configuration reference."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_two_commands_are_shown_and_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "demo", "bench"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_configuration_reference_matches_the_schema():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert generated in README, "run: .venv/bin/python scripts/config_reference.py --write"


def test_every_cli_subcommand_is_documented():
    from embviz.cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        assert f"embviz {name}" in README, name


def test_every_figure_the_readme_shows_is_committed():
    for path in re.findall(r"\]\((docs/[^)]+\.png)\)", README):
        assert (ROOT / path).is_file(), path


def test_no_placeholder_left():
    assert "PERFORMANCE_TABLE" not in README
    assert "TODO" not in README

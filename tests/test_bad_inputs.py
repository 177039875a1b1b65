"""The malformed-file corpus: each file says what the CLI must report (``# expect:``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embviz import ConfigError, load_config

CORPUS = sorted((Path(__file__).parent / "data" / "bad").glob("*.yaml"))


def expectation(path: Path) -> tuple[str, list[str]]:
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    expected = lines[0].removeprefix("# expect: ")
    args = []
    for line in lines[1:3]:
        if line.startswith("# run with: "):
            args = line.removeprefix("# run with: ").split()
    return expected, args


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_cli_reports_the_problem_without_a_traceback(path, run_cli):
    expected, args = expectation(path)
    result = run_cli("validate", path, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert f"{path}: {expected}" in result.stderr


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_api_raises_config_error_with_located_problems(path):
    expected, args = expectation(path)
    key = args[1] if args[:1] == ["--key"] else None
    with pytest.raises(ConfigError) as info:
        load_config(path, key=key)
    rendered = [": ".join(p for p in problem if p) for problem in info.value.problems]
    assert any(line.startswith(expected) or expected in line for line in rendered), rendered

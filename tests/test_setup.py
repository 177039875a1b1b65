"""The setup promises: one list of pins, environment.yml agrees, a second make installs nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from conftest import ROOT


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def requirement_pins() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


def test_environment_yml_agrees_with_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    conda_pins = pins([d.replace("=", "==", 1) for d in deps if isinstance(d, str) and "=" in d])
    env_pins = {**pins(pip_section), **conda_pins}
    env_pins.pop("python", None)
    required = requirement_pins()
    # torchrec is installed after the env with --no-deps (the comment in environment.yml says so).
    required.pop("torchrec")
    assert env_pins == required
    assert (
        "pip install --no-deps torchrec==" + requirement_pins()["torchrec"]
        in (ROOT / "environment.yml").read_text()
    )


def test_installed_packages_match_the_pins():
    from importlib.metadata import version

    for name, pinned in requirement_pins().items():
        assert version(name).split("+")[0] == pinned, name


def test_the_stack_named_in_the_design_is_pinned():
    required = requirement_pins()
    assert required["torch"] == "2.13.0"
    assert required["fbgemm-gpu-cpu"] == "1.8.0"
    assert required["torchrec"] == "1.8.0"
    text = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torchrec==1\.8\.0\s+# no-deps", text, re.M)


def test_a_second_make_installs_nothing():
    for target in ("test", "lab"):
        dry = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert "pip --disable-pip-version-check install" not in dry, dry
        assert "-m venv" not in dry, dry


def test_ci_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "CI=true" in ci
    assert Path(ROOT / ".ci" / "run").stat().st_mode & 0o111

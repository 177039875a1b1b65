"""The setup promises: one list of pins that environment.yml and pyproject agree with, a second
make installs nothing, and `make lab` prints a URL that opens the tuning notebook.

The pins themselves are not tested (a GPU machine keeps its own torch, README "GPU"): only that
the files agree, that pyproject's ranges admit the pins, and that what is installed satisfies
pyproject.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.error import URLError
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import pytest
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


def _environment_yml_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    conda_pins = pins([d.replace("=", "==", 1) for d in deps if isinstance(d, str) and "=" in d])
    return {**pins(pip_section), **conda_pins}


def _no_deps_names() -> list[str]:
    """Packages requirements.txt tags ``# no-deps`` (installed with pip --no-deps)."""
    names = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if not line.lstrip().startswith("#") and "no-deps" in line.split("#", 1)[-1]:
            names.extend(pins([line]))
    return names


def test_environment_yml_agrees_with_requirements():
    env_pins = _environment_yml_pins()
    assert "python" in env_pins
    env_pins.pop("python")
    required = requirement_pins()
    # --no-deps packages are installed after the env (the comment in environment.yml says how).
    no_deps = _no_deps_names()
    assert no_deps, "requirements.txt tags torchrec # no-deps"
    text = (ROOT / "environment.yml").read_text()
    for name in no_deps:
        assert f"pip install --no-deps {name}=={required.pop(name)}" in text, name
    assert env_pins == required


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_lower_bounds_admit_the_pins():
    from packaging.requirements import Requirement

    required = requirement_pins()
    dependencies = [Requirement(d) for d in _pyproject()["project"]["dependencies"]]
    assert dependencies
    for dependency in dependencies:
        name = dependency.name.lower().replace("_", "-")
        assert name in required, f"{name} is a dependency but not pinned in requirements.txt"
        assert dependency.specifier.contains(required[name], prereleases=True), (
            f"{dependency} does not admit the pin {name}=={required[name]}"
        )


def test_installed_packages_satisfy_pyproject():
    # The README's GPU install keeps the machine's own torch: any version pyproject admits.
    from importlib.metadata import version

    from packaging.requirements import Requirement

    for text in _pyproject()["project"]["dependencies"]:
        dependency = Requirement(text)
        installed = version(dependency.name)
        assert dependency.specifier.contains(installed, prereleases=True), (
            f"{dependency.name} {installed} does not satisfy {dependency}"
        )


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


@pytest.mark.slow
def test_make_lab_prints_a_url_that_opens_the_tuning_notebook():
    # The lab recipe exactly as make runs it (-o: the venv stamp counts as up to date).
    # Under `make test` the parent make's MAKEFLAGS/MAKELEVEL would make this one print
    # "Entering directory" lines into the recipe; the user types `make lab` at a shell.
    shell_env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "lab"],
        cwd=ROOT,
        env=shell_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lab = subprocess.Popen(
        ["bash", "-c", f"{recipe} --no-browser --ServerApp.port={port} --ServerApp.port_retries=0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: bash and the server stop together
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in lab.stdout], daemon=True).start()
    try:
        printed, url = [], None
        while url is None:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                raise AssertionError(
                    f"no URL on port {port} in 120 s; printed: {printed}"
                ) from None
            printed.append(line)
            match = re.search(rf"http://127\.0\.0\.1:{port}/\S+", line)
            url = match.group(0) if match else None
        parts = urlsplit(url)
        assert parts.path == "/lab/tree/01_tune_table_sizes.ipynb", printed
        token = parse_qs(parts.query)["token"][0]
        for _ in range(60):  # the server prints its URL a moment before it listens
            try:
                with urlopen(url, timeout=30) as page:
                    assert page.status == 200
                break
            except URLError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"nothing answers at {url}")
        contents = f"http://127.0.0.1:{port}/api/contents{parts.path[len('/lab/tree') :]}"
        with urlopen(f"{contents}?content=0&token={token}", timeout=30) as answer:
            assert json.load(answer)["type"] == "notebook"
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()

"""The setup promises: one list of pins, environment.yml agrees, a second make installs nothing,
and `make lab` prints a URL that opens the tuning notebook."""

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


@pytest.mark.slow
def test_make_lab_prints_a_url_that_opens_the_tuning_notebook():
    # The lab recipe exactly as make runs it (-o: the venv stamp counts as up to date).
    recipe = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "lab"],
        cwd=ROOT,
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
            line = lines.get(timeout=120)
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

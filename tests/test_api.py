"""The public API: ``__all__``, the type stub lazy_loader reads, and a light ``import embviz``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import embviz

from conftest import ROOT

STUB = ROOT / "embviz" / "__init__.pyi"


def _stub_imports() -> dict[str, str]:
    """``{public name: module}`` from the stub's ``from .module import name as name`` lines."""
    names = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 1 and node.module, ast.unparse(node)
            for alias in node.names:
                # "name as name" re-exports the name to type checkers (PEP 484 stubs).
                assert alias.asname == alias.name, ast.unparse(node)
                names[alias.name] = node.module
    return names


def test_stub_and_all_list_the_same_names():
    stub = _stub_imports()
    assert sorted(embviz.__all__) == sorted(stub)
    assert len(embviz.__all__) == len(set(embviz.__all__))
    assert set(dir(embviz)) >= set(embviz.__all__)


def test_every_public_name_comes_from_its_module():
    import importlib

    for name, module in _stub_imports().items():
        value = getattr(embviz, name)
        assert value is getattr(importlib.import_module(f"embviz.{module}"), name), name
        if module not in ("plots", "widgets"):  # packages re-exporting their modules' names
            assert name in importlib.import_module(f"embviz.{module}").__all__, name


def test_import_embviz_imports_no_heavy_package():
    code = (
        "import sys, embviz\n"
        "heavy = ('torch', 'torchrec', 'fbgemm_gpu', 'pandas', 'matplotlib', 'numpy', 'pydantic')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
        "print(embviz.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", embviz.__version__]


def test_every_name_loads_eagerly_when_asked():
    # lazy_loader's EAGER_IMPORT resolves every stub name at import: a stale name fails here.
    result = subprocess.run(
        [sys.executable, "-c", "import embviz"],
        capture_output=True,
        text=True,
        env={**os.environ, "EAGER_IMPORT": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_unknown_names_raise_attribute_error():
    import pytest

    with pytest.raises(AttributeError):
        embviz.MemoryArgumentError  # noqa: B018 - one ArgumentError replaced it
    assert embviz.ArgumentError.__mro__[1] is embviz.EmbvizError

"""The fault corpus: hostile or damaged input never gives wrong numbers, hangs, or a traceback.

Each case either runs the CLI and checks it exits 2 with ONE line on stderr naming the file or
field (no traceback), or calls the API and checks the typed error and what it names. Where a
fault sits next to a valid input (the largest table that fits, an undamaged vocabulary, a
report folder with a file of its own), the valid one is checked in the same test, so that a
reader refusing everything cannot pass.

Small malformed configs with one expected message each live in ``tests/data/bad`` (run by
``tests/test_bad_inputs.py``); the cases here need files made on the fly: large, endless,
symlinked, unwritable or damaged ones.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from embviz import (
    ConfigError,
    LargeEmbeddingsConfig,
    load_config,
    memory_table,
    parse_config,
    yamlload,
)
from embviz.config import MAX_BYTES, byte_limit_problems, table_bytes_bound
from embviz.serving import SERVING_DTYPES, serving_row_bytes
from embviz.yamlload import MAX_CONFIG_BYTES, MAX_NESTING, YamlProblem, load_yaml

LOADERS = [yamlload.PyLoader] + ([yamlload.CLoader] if yaml.__with_libyaml__ else [])


def one_line_error(result, *names: str) -> str:
    """Assert the CLI refused with exit 2 and one stderr line holding every name; return it."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def table_yaml(name: str = "t", rows: int = 1000, dim: int = 8, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    num_embeddings: {rows}\n    embedding_dim: {dim}\n"
        f"    data_type: fp32\n    optimizer: {{adam: {{lr: 0.01}}}}\n{extra}"
    )


def table(rows: int, dim: int, optimizer: str = "adam", dtype: str = "fp32") -> dict:
    return {
        "name": "t",
        "num_embeddings": rows,
        "embedding_dim": dim,
        "data_type": dtype,
        "optimizer": {optimizer: {"lr": 0.1}},
    }


# --------------------------------------------------------------------------- YAML


ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "tables: *i\n"
)


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_alias_bomb_is_refused_at_once_by_both_loaders(loader):
    with pytest.raises(YamlProblem) as info:
        load_yaml(ALIAS_BOMB, loader)
    assert info.value.location == "line 9, column 4"  # h, the value used 9 times by i
    assert "aliases expand the document to more than 1,000,000 nodes" in info.value.message
    # Aliases in moderation still work, and expand to the shared value.
    text = "adam: &adam {adam: {lr: 0.1}}\ntables:\n" + "".join(
        f"  - {{name: t{i}, num_embeddings: 10, embedding_dim: 4, data_type: fp32, "
        "optimizer: *adam}\n"
        for i in range(3)
    )
    assert load_yaml(text, loader)["tables"][2]["optimizer"] == {"adam": {"lr": 0.1}}


def test_alias_bomb_in_the_cli_is_one_line(tmp_path, run_cli):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 450
    one_line_error(run_cli("validate", path), str(path), "line 9, column 4", "aliases expand")


def test_error_messages_quote_a_bounded_part_of_huge_values():
    # Within the alias limit, but a value of 10,000 items where a number belongs.
    text = "big: &big [" + ", ".join(["123456789"] * 10_000) + "]\ntables:\n"
    text += table_yaml(dim="*big")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    (message,) = [m for loc, m in info.value.problems if loc == "tables[0].embedding_dim"]
    assert message.startswith("must be an integer, got [123456789, 123456789")
    assert len(message) < 200


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "text, location",
    [
        ("tables: " + "[" * 100_000 + "]" * 100_000 + "\n", "line 1, column 107"),
        ("tables:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300)) + "   x\n", None),
        ("tables: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "line 1, column 401"),
    ],
    ids=["flow_sequences", "block_mappings", "flow_mappings"],
)
def test_deep_nesting_is_a_located_error_not_a_recursion_error(loader, text, location):
    with pytest.raises(YamlProblem) as info:
        load_yaml(text, loader)
    assert f"nesting deeper than {MAX_NESTING} levels" in info.value.message
    if location:
        assert info.value.location == location
    # The level before the limit is read.
    ok = "tables: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1) + "\n"
    assert load_yaml(ok, loader)["tables"] is not None


def test_deep_nesting_in_the_cli_is_one_line(tmp_path, run_cli):
    path = tmp_path / "deep.yaml"
    path.write_text("tables:\n  - " + "[" * 1_000_000 + "\n")
    one_line_error(run_cli("validate", path), str(path), "line 2, column 102", "nesting deeper")


def test_file_past_the_size_limit_is_refused_from_its_size(tmp_path, run_cli):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:  # sparse: nothing is written
        handle.truncate(MAX_CONFIG_BYTES + 1)
    line = one_line_error(run_cli("validate", path), str(path), "64 MiB")
    assert f"{MAX_CONFIG_BYTES + 1:,} bytes" in line
    with pytest.raises(ConfigError, match="larger than 64 MiB, the limit on config files"):
        load_config(path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_endless_file_is_read_up_to_the_limit_only(run_cli):
    with pytest.raises(ConfigError) as info:
        load_config("/dev/zero")
    assert info.value.problems == [
        ("", "larger than 64 MiB, the limit on config files (reading stopped there)")
    ]
    one_line_error(run_cli("validate", "/dev/zero"), "/dev/zero", "64 MiB")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_endless_pipe_is_read_up_to_the_limit_only(tmp_path):
    import threading

    fifo = tmp_path / "endless.yaml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        chunk = b"# " + b"x" * 65_533 + b"\n"
        try:
            with open(fifo, "wb") as handle:
                while not stop.is_set():
                    handle.write(chunk)
        except BrokenPipeError:  # the reader stopped at the limit and closed its end
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(ConfigError, match="reading stopped there"):
            load_config(fifo)
    finally:
        stop.set()
        writer.join(timeout=10)


def test_text_past_the_limit_and_env_blowup_are_refused(monkeypatch):
    with pytest.raises(ConfigError, match="larger than 64 MiB"):
        parse_config("#" * (MAX_CONFIG_BYTES + 1))
    # 2-byte characters: 40 M characters are 80 MB.
    with pytest.raises(ConfigError, match="larger than 64 MiB"):
        parse_config("#" + "é" * (MAX_CONFIG_BYTES // 2 + 1))
    monkeypatch.setenv("EMBVIZ_BIG", "x" * 1_000_000)
    with pytest.raises(ConfigError, match=r"\$VAR substitution makes the config larger"):
        parse_config("tables:\n" + "# $EMBVIZ_BIG\n" * 100)
    # A modest substitution still works.
    monkeypatch.setenv("EMBVIZ_NAME", "user")
    assert parse_config("tables:\n" + table_yaml("$EMBVIZ_NAME")).table_names == ["user"]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_duplicate_keys_are_refused_but_merge_keys_may_override(loader):
    with pytest.raises(YamlProblem) as info:
        load_yaml("a: 1\nb:\n  c: 2\n  c: 3\n", loader)
    assert info.value.location == "line 4, column 3"
    assert info.value.message.startswith("duplicate key 'c' (first at line 3)")
    text = "base: &base {lr: 0.1, momentum: 0.9}\nsgd: {<<: *base, lr: 0.2}\n"
    assert load_yaml(text, loader)["sgd"] == {"lr": 0.2, "momentum": 0.9}
    # A merged mapping flattened by a later one before it is constructed: no false duplicate,
    # and PyYAML's own merge result.
    text = "r: &r {k: 1}\nouter:\n  inner:\n    b: &b {<<: *r, k: 2}\nx: {<<: *b, z: 3}\n"
    assert load_yaml(text, loader) == yaml.load(text, Loader=yaml.SafeLoader)


SYNTAX_ERRORS = {
    "indentation": "tables:\n  - a: 1\n   b: 2\n",
    "tab": "a:\n\tb: 1\n",
    "unclosed_flow": "a: [1, 2\nb: 3\n",
    "unclosed_at_end": "a: 1\nb: [1, 2",
    "unclosed_quote": "a: 'abc\n",
    "undefined_alias": "a: *nope\n",
    "nested_value": "a: b: c\n",
    "two_documents": "a: 1\n---\nb: 2\n",
    "control_character": "a: \x07\n",
    "byte_order_mark_inside": "a: 1\n\ufeffb: 2\n",
    "python_tag": "a: !!python/object/apply:os.system [ls]\n",
    "recursive_alias": "a: &a [1, *a]\n",
}


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
@pytest.mark.parametrize("name", SYNTAX_ERRORS)
def test_libyaml_gives_the_same_errors_at_the_same_lines(name):
    text = SYNTAX_ERRORS[name]
    found = []
    for loader in (yamlload.PyLoader, yamlload.CLoader):
        with pytest.raises(YamlProblem) as info:
            load_yaml(text, loader)
        found.append((info.value.location, info.value.message))
    assert found[0] == found[1]
    assert found[0][0].startswith("line ")


BAD_CORPUS = sorted((Path(__file__).parent / "data" / "bad").glob("*.yaml"))


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
@pytest.mark.parametrize("path", BAD_CORPUS, ids=[p.stem for p in BAD_CORPUS])
def test_the_bad_corpus_reads_the_same_with_either_loader(path, monkeypatch):
    key = "model.embeddings" if path.stem == "bad_key" else None
    found = []
    for loader in (yamlload.PyLoader, yamlload.CLoader):
        monkeypatch.setattr(yamlload, "LOADER", loader)
        with pytest.raises(ConfigError) as info:
            load_config(path, key=key)
        found.append(info.value.problems)
    assert found[0] == found[1]


def test_libyaml_is_the_loader_where_installed():
    assert yamlload.LOADER is (yamlload.CLoader if yaml.__with_libyaml__ else yamlload.PyLoader)


# --------------------------------------------------------------------------- bytes past int64


def _all_byte_columns(cfg: LargeEmbeddingsConfig) -> np.ndarray:
    """Every byte count memory_table gives, in every accounting it has."""
    values = []
    for state, mode, adagrad in itertools.product(
        ("fused", "torch"), ("train", "evaluate", "inference"), ("exact", "rowwise")
    ):
        if adagrad == "rowwise" and state == "torch":
            continue
        frame = memory_table(cfg, state, mode, adagrad=adagrad)
        values.append(frame[[c for c in frame.columns if c.endswith("_bytes")]].to_numpy())
    for dtype in SERVING_DTYPES:
        if cfg.tables[0].embedding_dim % {"int8": 2, "int4": 4, "int2": 8}.get(dtype, 1):
            continue
        frame = memory_table(cfg, "fused", "inference", serving_dtype=dtype)
        values.append(frame[[c for c in frame.columns if c.endswith("_bytes")]].to_numpy())
    return np.concatenate([v.ravel() for v in values])


@pytest.mark.filterwarnings("ignore::embviz.config.FusedKernelWarning")
@pytest.mark.parametrize("rows, dim", [(1, 1), (3, 5), (7, 3), (1000, 64), (123_457, 4096)])
def test_bound_is_the_largest_byte_count_of_any_accounting(rows, dim):
    largest = max(
        int(_all_byte_columns(LargeEmbeddingsConfig(tables=[table(rows, dim, o, d)])).max())
        for o in ("sgd", "adagrad", "adam")
        for d in ("fp32", "fp16")
    )
    assert table_bytes_bound(rows, dim) == largest


def _largest_rows(dim: int) -> int:
    low, high = 1, MAX_BYTES
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if table_bytes_bound(mid, dim) <= MAX_BYTES else (low, mid - 1)
    return low


def test_the_largest_table_that_fits_is_counted_exactly_and_one_more_row_is_refused():
    dim = 4096
    rows = _largest_rows(dim)
    cfg = LargeEmbeddingsConfig(tables=[table(rows, dim)])
    frame = memory_table(cfg, "torch")
    # Exact, against Python's unbounded ints: fp32 weights and Adam's two moments plus step.
    assert int(frame["weight_bytes"].iloc[0]) == 4 * rows * dim
    assert int(frame["total_bytes"].iloc[0]) == 12 * rows * dim + 4
    assert (_all_byte_columns(cfg) >= 0).all()
    assert _all_byte_columns(cfg).max() == table_bytes_bound(rows, dim) <= MAX_BYTES
    with pytest.raises(ValidationError) as info:
        LargeEmbeddingsConfig.model_validate({"tables": [table(rows + 1, dim)]})
    ((location, message),) = ConfigError.from_validation_error(info.value).problems
    assert location == "tables[0].num_embeddings"
    assert f"would take {table_bytes_bound(rows + 1, dim):,} bytes" in message


def test_rows_past_int64_are_refused_by_validate_and_memory(tmp_path, run_cli):
    path = tmp_path / "huge.yaml"
    path.write_text("tables:\n" + table_yaml("users", rows=1_000_000_000_000_000, dim=4096))
    for command in ("validate", "memory"):
        line = one_line_error(run_cli(command, path), str(path), "tables[0].num_embeddings")
        assert "table 'users'" in line and "int64" in line
        assert "would take 49,152,000,000,000,000,004 bytes" in line  # exact, never wrapped
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0][0] == "tables[0].num_embeddings"


def test_tables_that_fit_alone_but_not_together_are_refused():
    rows = _largest_rows(4096) // 2 + 1
    text = "tables:\n" + table_yaml("a", rows, 4096) + table_yaml("b", rows, 4096)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    ((location, message),) = info.value.problems
    assert location == "tables"
    assert message.startswith("the 2 tables together would take up to")
    # Half as many rows each: valid, and the totals are exact.
    half = LargeEmbeddingsConfig(
        tables=[table(rows // 2, 4096), table(rows // 2, 4096) | {"name": "u"}]
    )
    total = memory_table(half, "torch")["total_bytes"].sum()
    assert int(total) == 2 * (12 * (rows // 2) * 4096 + 4)


def test_configs_built_without_validation_are_refused_by_memory_table_and_build():
    cfg = LargeEmbeddingsConfig(tables=[table(1000, 8)])
    huge = cfg.model_copy(
        update={"tables": [cfg.tables[0].model_copy(update={"num_embeddings": 2**62})]}
    )
    assert byte_limit_problems(cfg) == []
    assert byte_limit_problems(huge)[0][0] == "tables[0].num_embeddings"
    with pytest.raises(ConfigError, match=r"tables\[0\]\.num_embeddings: table 't'"):
        memory_table(huge)
    pytest.importorskip("torch")
    from embviz.build import preflight

    assert preflight(cfg, "cpu").needed_bytes == 12 * 1000 * 8 + 4
    with pytest.raises(ConfigError, match="int64"):  # a wrapped, negative total would 'fit'
        preflight(huge, "cpu")


def test_serving_rows_of_very_wide_tables_are_exact():
    dims = np.array([1, 7, 8, 2**58, 2**60 - 1], dtype=np.int64)
    bits = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4, "int2": 2}
    for dtype in SERVING_DTYPES:
        extra = 0 if dtype in ("fp32", "fp16") else 4
        expected = [-(-(int(d) * bits[dtype] // 8 + extra) // 16) * 16 for d in dims]
        if dtype == "fp32":
            expected = [e if e <= MAX_BYTES else None for e in expected]
        got = serving_row_bytes(dims, dtype)
        for g, e in zip(got, expected, strict=True):
            if e is not None:
                assert int(g) == e


def test_the_largest_table_is_planned_and_reported_without_hanging(tmp_path, run_cli):
    pytest.importorskip("torchrec")
    from embviz.errors import ArgumentError
    from embviz.placement import MAX_GPUS, MAX_SEARCH_GPUS, PlanError, plan

    rows = _largest_rows(4096)
    cfg = LargeEmbeddingsConfig(tables=[table(rows, 4096)])
    # Bytes alone need 126 million 80 GiB GPUs: no planner run on such a topology is tried.
    with pytest.raises(PlanError) as info:
        plan(cfg, 8, 80, progress=False)
    assert info.value.min_gpus is None and info.value.reason == "insufficient_storage"
    assert (
        f"by bytes alone it needs at least 126,322,568 GPUs of 80 GiB, more than the "
        f"{MAX_SEARCH_GPUS:,}" in str(info.value)
    )
    with pytest.raises(ArgumentError, match=f"gpus: must be at most {MAX_GPUS:,}"):
        plan(cfg, MAX_GPUS + 1, 80, progress=False)
    path = tmp_path / "largest.yaml"
    path.write_text("tables:\n" + table_yaml("largest", rows, 4096))
    one_line_error(
        run_cli("plan", path, "--gpus", "8", "--hbm-gib", "80"), "126,322,568 GPUs of 80 GiB"
    )
    result = run_cli("report", path, "--out", tmp_path / "out", "--gpus", "8", "--hbm-gib", "80")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert f"{12 * rows * 4096:,}" in page  # fused Adam: exact, never wrapped
    assert "126,322,568 GPUs" in page


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, char", [("user.id", "."), ("a/b", "/"), ("..", "."), ("/", "/")])
def test_names_torch_or_snapshots_cannot_hold_are_refused(name, char, tmp_path, run_cli):
    path = tmp_path / "names.yaml"
    path.write_text("tables:\n" + table_yaml(f"'{name}'"))
    line = one_line_error(run_cli("validate", path), str(path), "tables[0].name")
    assert f"must not contain '{char}'" in line
    assert parse_config("tables:\n" + table_yaml("user_id")).table_names == ["user_id"]


# --------------------------------------------------------------------------- report output


@pytest.fixture
def ranker_path():
    import embviz

    return embviz.example("ranker")


def test_report_replaces_a_symlink_instead_of_writing_through_it(tmp_path, ranker_path):
    from embviz.report import write_report

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (out / "memory.png").symlink_to(victim)
    (out / "index.html").symlink_to(tmp_path / "dangling")
    (out / "notes.txt").write_text("not the report's")
    report = write_report(load_config(ranker_path), out)
    assert victim.read_text() == "keep me"
    assert not (out / "memory.png").is_symlink()
    assert (out / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "index.html").is_symlink()
    assert "<h1>embviz report</h1>" in report.index.read_text()
    assert not (tmp_path / "dangling").exists()
    assert (out / "notes.txt").read_text() == "not the report's"
    assert sorted(p.name for p in out.iterdir()) == [
        "dtype_savings.png",
        "index.html",
        "memory.png",
        "notes.txt",
    ]  # no temporary file left behind


def test_report_where_index_html_is_a_folder(tmp_path, ranker_path, run_cli):
    from embviz.report import ReportError, write_report

    out = tmp_path / "out"
    (out / "index.html").mkdir(parents=True)
    with pytest.raises(ReportError, match=r"index\.html: is a folder"):
        write_report(load_config(ranker_path), out)
    assert list(out.iterdir()) == [out / "index.html"]  # nothing written
    one_line_error(
        run_cli("report", ranker_path, "--out", out), str(out / "index.html"), "is a folder"
    )


@contextlib.contextmanager
def unwritable_folder(path: Path):
    """A folder no file can be created in: mode 0o555, or immutable (chattr +i) for root."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    # Root ignores modes; an immutable folder stops it (where the filesystem has the flag).
    if not shutil.which("chattr"):
        pytest.skip("running as root and no chattr to make a folder unwritable")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed: {made.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_report_into_a_file_or_an_unwritable_folder(tmp_path, ranker_path, run_cli):
    from embviz.report import ReportError, write_report

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    one_line_error(
        run_cli("report", ranker_path, "--out", not_a_folder),
        str(not_a_folder),
        "cannot create the output folder",
    )
    with unwritable_folder(tmp_path / "read-only") as out:
        line = one_line_error(run_cli("report", ranker_path, "--out", out), str(out))
        assert "cannot write the report there (" in line
        with pytest.raises(ReportError, match="cannot write the report there"):
            write_report(load_config(ranker_path), out)
        assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- vocabularies


def test_parquet_with_a_damaged_body_is_a_vocab_error_naming_the_file(tmp_path):
    from embviz.vocab import VocabError, load_vocab, write_vocab

    good = write_vocab(tmp_path / "good", np.arange(50_000) * 3, np.arange(50_000))
    vocab = load_vocab(good)
    assert len(vocab) == 50_000 and int(vocab.loc[30]) == 10
    bad = write_vocab(tmp_path / "bad", np.arange(50_000) * 3, np.arange(50_000))
    (file,) = bad.glob("*.parquet")
    data = bytearray(file.read_bytes())
    # Keep the magic bytes and the footer (so the schema reads) and damage the column data.
    middle = slice(8, len(data) // 2)
    data[middle] = b"\xff" * (middle.stop - middle.start)
    file.write_bytes(bytes(data))
    with pytest.raises(VocabError) as info:
        load_vocab(bad)
    assert str(info.value).startswith(f"{file}: ")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


# --------------------------------------------------------------------------- the CLI's last net


def test_cli_turns_any_os_error_into_one_line(monkeypatch, capsys):
    from embviz.cli import main, validate

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(validate, "run", refuse)
    assert main(["validate", "whatever.yaml"]) == 2
    assert capsys.readouterr().err == "/some/file: Permission denied\n"

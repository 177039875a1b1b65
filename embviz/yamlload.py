"""Safe, bounded YAML reading for configs: size, nesting, alias expansion and duplicate keys.

Configs are read with PyYAML's safe constructors only (no ``!!python`` tags), through libyaml's
C parser where PyYAML was built with it (``yaml.__with_libyaml__``) and PyYAML's pure-Python
parser otherwise; both give the same errors at the same lines. What a hostile or damaged file
could do to the reader is bounded:

- `MAX_CONFIG_BYTES` (64 MiB): a config file, or YAML text after ``$VAR`` substitution, may not
  be larger; reading stops there (so ``/dev/zero`` or an endless pipe is refused, not read).
- `MAX_NESTING` (100 levels, against about 8 in a real config): deeper collections are refused
  with the line of the collection that goes too deep, never a ``RecursionError``.
- Aliases (``*name``) may expand the document to at most `MAX_ALIAS_NODES` nodes, or
  `ALIAS_EXPANSION_RATIO` times the nodes written in the file where that is more: a
  "billion laughs" file of a few hundred bytes is refused at once.
- A key given twice in one mapping is an error (the YAML spec says so), with both lines. Keys
  brought in by a merge (``<<: *defaults``) may be overridden, as YAML's merge keys intend.

Nothing here knows the config schema: `embviz.config` turns a `YamlProblem` into a `ConfigError`.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import os
import re
import reprlib
import stat
import string
from collections.abc import Hashable, Iterator
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

__all__ = [
    "ALIAS_EXPANSION_RATIO",
    "MAX_ALIAS_NODES",
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "YamlProblem",
    "load_yaml",
    "no_cycle_collection",
    "quote",
    "read_limited",
    "substitute_env",
]

#: Largest config file (and YAML text after ``$VAR`` substitution), in bytes: 64 MiB.
MAX_CONFIG_BYTES = 64 * 2**20
#: Deepest nesting of collections (the top-level mapping is level 1).
MAX_NESTING = 100
#: Aliases may expand a document to this many nodes ...
MAX_ALIAS_NODES = 1_000_000
#: ... or to this many times the nodes written in the file, whichever is larger.
ALIAS_EXPANSION_RATIO = 10

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MIB = 2**20

# Error messages quote values through this: a bounded repr however large or deep the value.
_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def quote(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters (containers: a few items, 3 levels)."""
    return _repr.repr(value)


class YamlProblem(Exception):
    """Why a text is not a YAML document embviz reads: a location (may be empty) and a message."""

    def __init__(self, location: str, message: str):
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}" if location else message)


def _limit_text() -> str:
    return f"{MAX_CONFIG_BYTES // _MIB} MiB"


def read_limited(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a config file, refusing one larger than `MAX_CONFIG_BYTES`.

    A regular file is refused from its size; anything else (a device, a pipe) is read up to the
    limit and refused if there is more, so an endless source is never read to its end.

    Raises
    ------
    OSError
        When the file cannot be opened or read (the caller words it).
    YamlProblem
        When it is larger than the limit.
    """
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_CONFIG_BYTES:
            raise YamlProblem(
                "",
                f"the file is {info.st_size:,} bytes, larger than {_limit_text()}, the limit on "
                "config files",
            )
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise YamlProblem(
            "",
            f"larger than {_limit_text()}, the limit on config files (reading stopped there)",
        )
    return data


def _check_text_size(text: str, what: str) -> None:
    # A character is 1 to 4 UTF-8 bytes: encode only when the length alone cannot decide.
    if len(text) > MAX_CONFIG_BYTES or (
        len(text) > MAX_CONFIG_BYTES // 4 and len(text.encode("utf-8")) > MAX_CONFIG_BYTES
    ):
        raise YamlProblem("", f"{what} larger than {_limit_text()}, the limit on config files")


def substitute_env(text: str) -> str:
    """``$VAR`` and ``${VAR}`` from the environment (``$USER`` always set), as the-algorithm-ml.

    `string.Template.safe_substitute`'s rules (unknown names and lone ``$`` stay as written,
    ``$$`` is ``$``), refusing text that substitution would make larger than the limit.
    """
    _check_text_size(text, "the config is")
    if "$" not in text:
        return text
    try:
        user = getpass.getuser()
    except Exception:  # no user name in minimal containers
        user = os.environ.get("USER", "")
    mapping = {**os.environ, "USER": user}
    template = string.Template(text)
    grown = len(text)

    def convert(match: re.Match[str]) -> str:
        nonlocal grown
        name = match.group("named") or match.group("braced")
        if name is not None:
            if name not in mapping:
                return match.group(0)
            value = mapping[name]
            grown += len(value) - len(match.group(0))
            if grown > MAX_CONFIG_BYTES:
                raise YamlProblem(
                    "",
                    f"$VAR substitution makes the config larger than {_limit_text()}, the "
                    "limit on config files",
                )
            return value
        if match.group("escaped") is not None:
            return template.delimiter
        return match.group(0)

    result = template.pattern.sub(convert, text)
    _check_text_size(result, "after $VAR substitution the config is")
    return result


# --------------------------------------------------------------------------- loaders

# YAML 1.2 floats: PyYAML alone (YAML 1.1) reads ``1e-3`` as a string.
YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _NestingError(ComposerError):
    """Nesting past `MAX_NESTING`."""


class _Resolver(Resolver):
    """Counts nesting as the composer descends (both parsers call these once per node)."""

    _depth = 0
    _written = 0

    def descend_resolver(self, current_node: Node | None, current_index: Any) -> None:
        self._depth += 1
        self._written += 1
        if self._depth > MAX_NESTING:
            raise _NestingError(
                None,
                None,
                f"nesting deeper than {MAX_NESTING} levels (the limit) inside this collection",
                current_node.start_mark if current_node is not None else None,
            )

    def ascend_resolver(self) -> None:
        self._depth -= 1


_Resolver.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789"))


class _Constructor(SafeConstructor):
    """Safe construction that refuses a key given twice in one mapping."""

    def flatten_mapping(self, node: MappingNode) -> None:
        # Remember how many pairs were written in this mapping before merges prepend theirs.
        if not hasattr(node, "_embviz_own"):
            node._embviz_own = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)  # type: ignore[attr-defined]
        super().flatten_mapping(node)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        merged = len(node.value) - node._embviz_own  # type: ignore[attr-defined]
        mapping: dict[Any, Any] = {}
        first: dict[Any, Any] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            if i >= merged:
                if key in first:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {quote(key)} (first at line {first[key].line + 1}): "
                        "a key may appear once in a mapping",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


class PyLoader(Reader, Scanner, Parser, Composer, _Constructor, _Resolver):
    """PyYAML's pure-Python parser with embviz's limits (used where libyaml is missing)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


if yaml.__with_libyaml__:
    from yaml.cyaml import CParser

    class CLoader(CParser, _Constructor, _Resolver):  # type: ignore[misc]
        """libyaml's C parser with embviz's limits."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Constructor.__init__(self)
            _Resolver.__init__(self)

    LOADER: type = CLoader
else:  # pragma: no cover - PyYAML built without libyaml
    LOADER = PyLoader


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return node.value
    return []


def _check_aliases(root: Node, written: int) -> None:
    """Refuse a document whose aliases expand it past the limit or nest it too deep."""
    limit = max(MAX_ALIAS_NODES, ALIAS_EXPANSION_RATIO * written)
    size: dict[int, int] = {}  # expanded nodes under each node (saturating at limit + 1)
    height: dict[int, int] = {}  # expanded nesting levels (saturating at MAX_NESTING + 1)
    uses: dict[int, int] = {}
    nodes: dict[int, Node] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = min(limit + 1, 1 + sum(size[id(c)] for c in children))
            height[key] = min(
                MAX_NESTING + 1, 1 + max((height[id(c)] for c in children), default=0)
            )
            continue
        uses[key] = uses.get(key, 0) + 1
        if key in nodes:
            if key not in size:  # entered, not finished: an ancestor of itself
                mark = node.start_mark
                raise YamlProblem(
                    f"line {mark.line + 1}, column {mark.column + 1}",
                    "an alias inside this anchored value refers to the value itself (a "
                    "recursive structure): configs are trees",
                )
            continue
        nodes[key] = node
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    if height[id(root)] > MAX_NESTING:
        # Follow the deepest path to the collection at the last level allowed.
        node = root
        for _ in range(MAX_NESTING - 1):
            node = max(_children(node), key=lambda c: height[id(c)])
        mark = node.start_mark
        raise YamlProblem(
            f"line {mark.line + 1}, column {mark.column + 1}",
            f"nesting deeper than {MAX_NESTING} levels (the limit) inside this collection, once "
            "aliases are expanded",
        )
    if size[id(root)] > limit:
        shared = [k for k, n in uses.items() if n > 1]
        worst = max(shared, key=lambda k: min(limit + 1, size[k] * uses[k]))
        mark = nodes[worst].start_mark
        raise YamlProblem(
            f"line {mark.line + 1}, column {mark.column + 1}",
            f"aliases expand the document to more than {limit:,} nodes, the limit "
            f"({MAX_ALIAS_NODES:,} or {ALIAS_EXPANSION_RATIO} times the {written:,} written, "
            f"whichever is larger); this anchored value is used {uses[worst]:,} times",
        )


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _problem(exc: yaml.YAMLError) -> YamlProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or str(exc)
        tag = re.search(r"for the tag '([^']+)'", problem)
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            problem = f"tag {quote(name)} is refused: only plain YAML is read (safe loading)"
        return YamlProblem(_where(exc.problem_mark or exc.context_mark), problem)
    return YamlProblem("", f"not valid YAML: {exc}")


# Syntax errors are re-worded by PyYAML's own parser when the text up to them is this short
# (libyaml words some differently; the line and column are the same).
_REWORD_LIMIT = 8 * 2**20


def _python_wording(text: str, problem: YamlProblem, mark: Any) -> YamlProblem:
    """PyYAML's wording and place for a libyaml syntax error at ``mark``.

    PyYAML's parser reads the text up to the error: through the line after it where that is
    short enough (so the token at the error is whole), else up to the error itself. Its own
    error there is taken when it is at the same place or before (libyaml's scanner reads
    ahead: its nesting limit fires past the place PyYAML stops at).
    """
    start = 0  # of the error's line
    for _ in range(mark.line):
        start = text.find("\n", start) + 1
        if start == 0:  # past the last line: the error is at the end of the text
            start = len(text)
            break
        if start > _REWORD_LIMIT:
            return problem
    line_end = text.find("\n", start)
    after = -1 if line_end == -1 else text.find("\n", line_end + 1)
    whole = after == -1 or after <= _REWORD_LIMIT
    prefix = text[: (len(text) if after == -1 else after + 1) if whole else start + mark.column + 1]
    if len(prefix) > _REWORD_LIMIT:
        return problem
    try:
        PyLoader(prefix).get_single_node()
    except yaml.MarkedYAMLError as exc:
        found = exc.problem_mark or exc.context_mark
        if found is None:
            return problem
        place, other = (found.line, found.column), (mark.line, mark.column)
        if place < other or (place == other and whole):
            return _problem(exc)
    except (yaml.YAMLError, RecursionError):
        pass
    return problem


_NON_PRINTABLE = Reader.NON_PRINTABLE


def _check_printable(text: str) -> None:
    """Refuse control characters as PyYAML's reader does, located (libyaml gives an offset)."""
    match = _NON_PRINTABLE.search(text)
    if match is None:
        match = re.compile("\ufeff").search(text, 1)  # a byte-order mark only at the start
    if match:
        start = match.start()
        line = text.count("\n", 0, start)
        column = start - (text.rfind("\n", 0, start) + 1)
        raise YamlProblem(
            f"line {line + 1}, column {column + 1}",
            f"character {ord(match.group()):#06x} is not allowed here (a control character or "
            "a byte-order mark)",
        )


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reading a config makes no cycles).

    Composing, constructing and validating a large config create millions of objects, and the
    collector would only rescan them again and again: twice the time at 50 MB.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def load_yaml(text: str, loader: type | None = None) -> Any:
    """The YAML document in ``text`` (None when empty), within the limits of this module.

    Parameters
    ----------
    text : str
        YAML (no ``$VAR`` substitution here: see `substitute_env`).
    loader : type, optional
        `PyLoader` or ``CLoader``; default `LOADER`, libyaml's where PyYAML has it.

    Raises
    ------
    YamlProblem
        Malformed YAML, a refused tag, a duplicate key, nesting past `MAX_NESTING`, aliases
        past the expansion limit, or text larger than `MAX_CONFIG_BYTES`; located by line and
        column where there is one.
    """
    _check_text_size(text, "the config is")
    _check_printable(text)
    loader = loader or LOADER
    with no_cycle_collection():
        instance = None
        try:
            instance = loader(text)
            node = instance.get_single_node()
            if node is None:
                return None
            if "&" in text:  # no anchor, no alias: nothing to expand
                _check_aliases(node, instance._written)
            return instance.construct_document(node)
        except YamlProblem:
            raise
        except (ConstructorError, _NestingError) as exc:  # raised by Python code: same in both
            raise _problem(exc) from None
        except yaml.YAMLError as exc:
            problem = _problem(exc)
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            if loader is not PyLoader and mark is not None and problem.location:
                problem = _python_wording(text, problem, mark)
            raise problem from None
        finally:
            if instance is not None:
                instance.dispose()

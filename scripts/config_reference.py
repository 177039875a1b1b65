"""Print the README's configuration reference, generated from the schema.

    .venv/bin/python scripts/config_reference.py          # print the Markdown
    .venv/bin/python scripts/config_reference.py --write  # replace the section in README.md

tests/test_readme.py fails when README.md and the schema disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from embviz.config import config_schema

BEGIN = "<!-- config-reference:begin (scripts/config_reference.py --write) -->"
END = "<!-- config-reference:end -->"
ORDER = [
    "LargeEmbeddingsConfig",
    "EmbeddingBagConfig",
    "OptimizerConfig",
    "AdamConfig",
    "SgdConfig",
    "AdagradConfig",
    "LearningRate",
    "LinearRampToCosine",
    "LinearRampToConstant",
    "PiecewiseConstant",
    "EmbeddingSnapshot",
    "DataType",
]


def type_name(spec: dict) -> str:
    if "$ref" in spec:
        return f"`{spec['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in spec:
        names = [type_name(s) for s in spec["anyOf"] if s.get("type") != "null"]
        return " or ".join(names)
    kind = spec.get("type", "any")
    if kind == "array":
        if "prefixItems" in spec:
            return "[" + ", ".join(type_name(s) for s in spec["prefixItems"]) + "]"
        return f"list of {type_name(spec.get('items', {}))}"
    return kind


def constraints(spec: dict) -> str:
    parts = []
    for key, sign in (("exclusiveMinimum", ">"), ("minimum", ">=")):
        if key in spec:
            parts.append(f"{sign} {spec[key]}")
    for option in spec.get("anyOf", []):
        parts.extend(constraints(option).split(", ") if constraints(option) else [])
    return ", ".join(parts)


def render() -> str:
    schema = config_schema()
    defs = dict(schema["$defs"])
    defs["LargeEmbeddingsConfig"] = schema
    lines = [BEGIN, ""]
    for name in ORDER:
        spec = defs[name]
        lines.append(f"#### `{name}`")
        lines.append("")
        if "enum" in spec:
            values = ", ".join(f"`{v}`" for v in spec["enum"])
            lines += [f"{spec.get('description', '').strip()} One of {values}.", ""]
            continue
        description = " ".join(spec.get("description", "").split()).replace("``", "`")
        if description and name != "LargeEmbeddingsConfig":
            lines += [description, ""]
        lines += ["| field | type | required | default | rule |", "| --- | --- | --- | --- | --- |"]
        required = set(spec.get("required", []))
        for field, fspec in spec["properties"].items():
            default = fspec.get("default", "")
            shown = "" if field in required else f"`{default}`" if default is not None else "none"
            rule = constraints(fspec)
            note = " ".join(fspec.get("description", "").split())
            rule = "; ".join(p for p in (rule, note) if p)
            yes = "yes" if field in required else ""
            lines.append(f"| `{field}` | {type_name(fspec)} | {yes} | {shown} | {rule} |")
        lines.append("")
    lines += [
        "Unknown fields are refused at every level. `OptimizerConfig` takes exactly one of "
        "`adam`, `sgd`, `adagrad`; `LearningRate` exactly one schedule; `piecewise_constant` one "
        "more value than boundaries; table names are unique, hold no `.` (torch module names "
        "cannot) and no `/` (snapshot paths use it), and `tables_to_log` names tables. Numbers "
        "are finite (`.inf` and `.nan` are refused), and a table's bytes must fit int64 in "
        "every accounting (see [Limits](#limits)). A key given twice in a mapping is an error. "
        "`embedding_dim % 4 != 0` is valid but warns (FBGEMM's fused kernels need multiples of "
        "4). `embviz schema` prints the JSON Schema.",
        "",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    text = render()
    if "--write" not in sys.argv:
        print(text)
        return 0
    readme = Path(__file__).resolve().parent.parent / "README.md"
    content = readme.read_text()
    start, end = content.index(BEGIN), content.index(END) + len(END)
    readme.write_text(content[:start] + text + content[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

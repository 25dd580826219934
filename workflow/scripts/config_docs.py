"""Render config/README.md from the schema, so every key's documentation matches the code.

Usage: python workflow/scripts/config_docs.py > config/README.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cmgh.config import DEFAULT_CONFIG, read_yaml, schema  # noqa: E402

_ABSENT = object()

HEADER = """# Configuration keys

`cmgh/defaults/config.yaml` (default, generated mini datasets, 2 CPU cores) and `config/paper.yaml`
(real datasets, VATT's published settings) share these keys. Defaults come from
`cmgh/defaults/config.schema.yaml` (both ship inside the package); unknown keys are errors, every
number must be finite (no `.inf`, `.nan`) and, where its row names no bound, at most 2^31 − 1 (an integer)
or 1e12 (a number) in size; an integer key takes `6e0` as 6 (one value, one fingerprint); a path is
never empty and holds no NUL byte or blank folder name; a key repeated in one mapping is refused; relative paths are relative to
the working directory. Override any key on the command line with
`--set key.path=value` (`cmgh`) or `--config 'set=[a.b=1, "c.d=[1, 2]"]'` (Snakemake, parsed as `--set`
parses it; quote an item holding a comma or bracket; Snakemake's own `--config key=value` takes no dotted key); `cmgh --config A --config B`
stacks files in order (B deep-merged over A), as `snakemake --configfile A B` does. The default
column is the schema's; where the default config `cmgh/defaults/config.yaml` (what `make reproduce`
runs) sets another value, the column says so.

This page is generated: `python workflow/scripts/config_docs.py > config/README.md`.

| key | type / allowed | default | meaning |
|---|---|---|---|
"""


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "")
    if isinstance(kind, list):  # e.g. [number, "null"]
        kind = " or ".join(kind)
    if kind == "array" and "items" in node:
        return f"list of {_type(node['items'])}"
    bounds = [f"{op} {node[k]}" for k, op in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")) if k in node]
    if node.get("minLength") == 1:
        bounds.append("non-empty")
    return " ".join([kind, *bounds]).strip()


def _shipped(shipped: Any, key: str) -> Any:
    return shipped.get(key, _ABSENT) if isinstance(shipped, dict) else _ABSENT


def rows(node: dict[str, Any], prefix: str = "", shipped: Any = None) -> Iterator[str]:
    """One row per key; ``shipped``: the default config's value of this section (differences are shown)."""
    for key, sub in node.get("properties", {}).items():
        name = f"{prefix}{key}"
        value = _shipped(shipped, key)
        if sub.get("type") == "object" and "properties" in sub:
            if sub.get("description"):
                yield f"| **`{name}`** | section | | {sub['description'].strip()} |"
            yield from rows(sub, f"{name}.", None if value is _ABSENT else value)
            continue
        default = json.dumps(sub["default"]) if "default" in sub else ""
        cell = f"`{default}`"
        if value is not _ABSENT and ("default" not in sub or value != sub["default"]):
            cell += f" (default config: `{json.dumps(value)}`)"
        description = " ".join(str(sub.get("description", "")).split())
        yield f"| `{name}` | {_type(sub)} | {cell} | {description} |"


def render() -> str:
    return HEADER + "\n".join(rows(schema(), shipped=read_yaml(DEFAULT_CONFIG))) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

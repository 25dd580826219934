"""The GPU check's two reports: ``report.json`` (every figure, machine-readable) and ``report.md`` (the same for people).

Both are rewritten whole, atomically, after every section, so a check stopped at its time limit
leaves a well-formed report of what it measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmgh.io import atomic_write_text

JSON_NAME, MARKDOWN_NAME = "report.json", "report.md"


def _clean(value: Any) -> Any:
    """JSON without NaN/Inf (``null``), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 0.01 or abs(value) >= 1e5 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(meta: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"# GPU check: {meta['status'].upper()}", ""]
    lines += [f"- {k}: {_cell(v)}" for k, v in meta.items() if k not in ("status", "sections")]
    lines += ["", "| section | status | seconds | problems |", "|---|---|---|---|"]
    for r in records:
        status = r["status"] + (f" ({r['skipped']})" if r.get("skipped") else "")
        lines.append(f"| {r['name']}: {_cell(r['title'])} | {status} | {r['seconds']} | {_cell('; '.join(r['problems'])) or '-'} |")
    for r in records:
        lines += ["", f"## {r['title']} (`{r['name']}`): {r['status']}", ""]
        for problem in r["problems"]:
            lines.append(f"- **problem**: {_cell(problem)}")
        for table in r["tables"]:
            lines += [f"**{table['title']}**", "", "| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
            lines.append("")
        lines += [f"- {_cell(note)}" for note in r["notes"]]
    heads = [h for r in records for h in r["headline"]]
    if heads:
        lines += ["", "## Figures", ""] + [f"- {h}" for h in heads]
    return "\n".join(lines).rstrip() + "\n"


def write(out: Path, meta: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> tuple[Path, Path]:
    """``out/report.json`` and ``out/report.md``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    data = _clean({**meta, "sections": list(records)})
    j = atomic_write_text(out / JSON_NAME, json.dumps(data, indent=2, sort_keys=False) + "\n")
    m = atomic_write_text(out / MARKDOWN_NAME, markdown(meta, records))
    return j, m

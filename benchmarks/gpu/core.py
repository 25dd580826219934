"""What every section of the GPU check gets (:class:`Context`) and returns (:class:`Outcome`), and the orchestrator.

Why an orchestrator: the check runs once, for minutes, on a machine lent for minutes. A section that
raises must not take the others with it, so each runs in turn, its exception becomes its failure in
the report, and the reports are rewritten after every section (a check killed at its time limit
still leaves what it measured). Only :class:`Outcome` ``problems`` and exceptions fail the check;
a combination the library refuses in one line (e.g. ``pretrain.compile`` where a hook needs eager
layers) is recorded as ``refused`` and does not.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Context:
    """The run's settings and scratch space, the same for every section."""

    device: Any  # torch.device (the orchestrator itself needs no torch)
    smoke: bool
    out: Path
    work: Path  # scratch folder (generated data, run folders)
    deadline: float  # time.monotonic() by which the check must end
    options: Any = None  # the parsed command line

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Outcome:
    """What a section measured: figures (JSON), tables (Markdown), notes, headline lines printed last, problems."""

    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # any problem fails the section, and the check
    skipped: str = ""  # why the whole section did not run (not a failure)

    def check(self, ok: bool, problem: str) -> bool:
        """Record ``problem`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.problems.append(problem)
        return ok


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: Callable[[Context], Outcome]
    needs_s: float = 0.0  # below this much time left the section is skipped (reported, not a failure)


def run_sections(sections: Sequence[Section], ctx: Context, write: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """Run each section in turn; ``write(records)`` after each. A record's ``status`` is ok, failed or skipped."""
    records: list[dict[str, Any]] = []
    for section in sections:
        log.info("section %s: %s (%.0f s left)", section.name, section.title, ctx.remaining())
        started = time.perf_counter()
        try:
            if ctx.remaining() < section.needs_s:
                outcome = Outcome(skipped=f"{ctx.remaining():.0f} s of the time budget left, about {section.needs_s:.0f} s needed")
            else:
                outcome = section.run(ctx)
        except Exception as exc:  # noqa: BLE001 - a section's crash is its failure, reported; the next section still runs
            outcome = Outcome(problems=[f"{type(exc).__name__}: {exc}".strip()])
            outcome.notes.append("traceback (last lines): " + " | ".join(traceback.format_exc().strip().splitlines()[-6:]))
            log.exception("section %s failed", section.name)
        status = FAILED if outcome.problems else SKIPPED if outcome.skipped else OK
        records.append({
            "name": section.name, "title": section.title, "status": status, "seconds": round(time.perf_counter() - started, 1),
            "figures": outcome.figures, "tables": [vars(t) for t in outcome.tables], "notes": outcome.notes,
            "headline": outcome.headline, "problems": outcome.problems, "skipped": outcome.skipped,
        })
        log.info("section %s: %s in %.0f s%s", section.name, status, records[-1]["seconds"],
                 "".join(f"\n  problem: {p}" for p in outcome.problems))
        write(records)
    return records


def overall(records: Sequence[dict[str, Any]]) -> str:
    return FAILED if any(r["status"] == FAILED for r in records) else OK

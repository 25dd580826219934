"""What the report found against what the config asked for.

A table's mean over fewer seeds than the config names, or a variant without a task the others were
evaluated on, is said (a warning, and a section of the summary), never averaged over silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from cmgh import layout

log = logging.getLogger(__name__)
HEADING = "## Missing against the config"


def gaps(long: pd.DataFrame, config: Mapping[str, Any]) -> list[str]:
    """One sentence per backbone, variant and task short of the config's seeds (a finite metric per seed)
    or missing while other variants have it. ``config``: the tree's resolved config (empty: nothing to compare)."""
    variants, seeds = list(config.get("variants", {}) or {}), sorted(int(s) for s in config.get("pretrain", {}).get("seeds", []) or [])
    if not variants or not seeds:
        return []
    found = long[long["value"].notna()]
    tasks = [t for t in dict.fromkeys(found["task"]) if (found[found.task == t].variant != layout.RANDOM_VARIANT).any()]
    lines = []
    for backbone in sorted(found["backbone"].unique()):
        for variant in variants:
            for task in tasks:
                have = sorted(found[(found.backbone == backbone) & (found.variant == variant) & (found.task == task)]["seed"].unique())
                missing = [s for s in seeds if s not in have]
                if not missing:
                    continue
                if not have:
                    lines.append(f"`{backbone}/{variant}` has no {task} metrics (the config names the variant; other variants have them).")
                else:
                    lines.append(f"`{backbone}/{variant}` {task}: seeds {_seeds(have)} of the config's {_seeds(seeds)} "
                                 f"(its means are over {len(have)}; missing {_seeds(missing)}).")
    return lines


def section(lines: list[str]) -> str:
    """The summary's section, empty when nothing is missing; each line also a warning."""
    for line in lines:
        log.warning("report: %s", line)
    return f"\n{HEADING}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n" if lines else ""


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(int(s)) for s in seeds)

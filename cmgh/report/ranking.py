"""Methods ranked on each primary endpoint, each beside what its step costs.

A method that gains a point at twice the step time has not been compared with the baseline at
equal compute. Every run logs its throughput each step (``samples_per_s``, the loader's wait
included; newer runs also the step alone, ``step_time_s``, and the peak memory), so the page can
put the cost next to the gain: per world, backbone and seed, the variant's median throughput
against the baseline's of the same seed, then the median over seeds (robust to a busy
machine's outliers: study jobs share the cores). Throughput is the one measure every run of a
study has, old and new, which is why the ratio uses it rather than ``step_time_s``. Ratios are
machine-dependent; ``benchmarks/train_step.py --rivals`` measures them on one model and batch,
in one process, without that noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from cmgh import layout
from cmgh.report.collect import noise_setting_of, run_folders, train_logs
from cmgh.report.pooled import KEYS, on_modality
from cmgh.report.primary import EndpointResult, verdict
from cmgh.report.tables import to_markdown


def throughputs(roots: Iterable[Path]) -> pd.DataFrame:
    """Every run's median samples/s over its steps: columns :data:`cmgh.report.pooled.KEYS` and ``samples_per_s``."""
    frames = []
    for root in roots:
        setting = noise_setting_of(Path(root))
        logs = train_logs(run_folders(Path(root)))
        if "samples_per_s" not in logs:
            continue
        rates = logs[logs["samples_per_s"] > 0].groupby(["backbone", "variant", "seed"], as_index=False)["samples_per_s"].median()
        frames.append(rates.assign(modality=setting.modality, noise_rate=setting.rate))
    return pd.concat(frames, ignore_index=True)[[*KEYS, "samples_per_s"]] if frames else pd.DataFrame(columns=[*KEYS, "samples_per_s"])


def step_cost(runs: pd.DataFrame, backbone: str, variant: str, modality: str) -> float:
    """The variant's step time in baseline steps on ``modality``'s noisy worlds: the median over worlds and seeds of
    the baseline's throughput over the variant's, paired by world and seed (NaN without a pair)."""
    sel = runs[(runs.backbone == backbone) & on_modality(runs, modality) & (runs.noise_rate > 0)]
    by = ["modality", "noise_rate", "seed"]
    a = sel[sel.variant == variant].set_index(by)["samples_per_s"]
    b = sel[sel.variant == layout.BASELINE_VARIANT].set_index(by)["samples_per_s"]
    ratio = (b / a).dropna()
    return float(ratio.median()) if len(ratio) else math.nan


def cost_text(cost: float) -> str:
    return f"{cost:.2f}x" if math.isfinite(cost) else "—"


def ranking_table(result: EndpointResult, runs: pd.DataFrame) -> str:
    """Every compared variant of one endpoint × backbone, best pooled gain first, with its interval, verdict and step cost."""
    col = result.endpoint.column
    ranked = sorted((v for v in result.variants if v.gain is not None), key=lambda v: -v.gain.mean)
    rows = [{
        "rank": i,
        "variant": f"`{v.variant}`" + (f" ({v.role})" if v.control else ""),
        f"pooled gain ({result.endpoint.name})": v.gain.format(col.digits),
        "verdict": verdict(result, v),
        "step time (x baseline)": cost_text(step_cost(runs, result.backbone, v.variant, result.endpoint.modality)),
    } for i, v in enumerate(ranked, start=1)]  # fmt: skip
    return to_markdown(pd.DataFrame(rows)).rstrip("\n") if rows else ""


def section(results: Sequence[EndpointResult], runs: pd.DataFrame) -> str:
    """The page's ranking section: one table per primary endpoint × backbone with headroom."""
    parts = []
    for r in results:
        table = ranking_table(r, runs) if r.headroom else ""
        if table:
            parts.append(f"**{r.endpoint.name}**, {r.backbone}:")
            parts.append(table)
    return "\n\n".join(parts) or "No primary endpoint with headroom and compared variants."


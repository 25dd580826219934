"""The pre-declared primary analysis of a noise study (``worlds.analysis`` in the config): per
primary endpoint (a task's metric under one noise modality), its headroom and, per variant, the
gain over the baseline pooled over the modality's worlds and its slope against the rate
(:mod:`cmgh.report.pooled`), the equivalence test against the endpoint's margin and the
minimum detectable effect at the seeds run (:mod:`cmgh.report.power`), and a verdict.

* The family: the pooled gain and the slope of every variant on every endpoint with headroom
  (:mod:`cmgh.report.headroom`), the positive control excluded; Benjamini-Hochberg over it alone.
  An endpoint without headroom is marked :data:`cmgh.report.headroom.NO_HEADROOM` and compared on
  nothing.
* The positive control: a variant named :data:`ORACLE` (an oracle scorer reading the generator's
  ground truth). Its share of the gap says how much a perfect detector recovers; it is tested on its
  own p, outside the family (a control is not a claim about a method).
* The verdict of a pooled gain: "better"/"worse" when its adjusted p < 0.05; else "equivalent
  within ±margin" when the two one-sided tests pass; else "inconclusive (MDE x)".
* Runs flagged by :mod:`cmgh.report.run_checks` are left out before anything is computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.report import headroom, pooled, power, stats
from cmgh.report.columns import Column, column_of
from cmgh.report.tables import to_markdown

ORACLE = "oracle"  # the positive control's variant name
SECTION = "worlds"  # the config section whose ``analysis`` sub-object declares the primary analysis
ALPHA = 1.0 - stats.LEVEL


@dataclass(frozen=True)
class Endpoint:
    task: str
    metric: str
    modality: str

    @property
    def column(self) -> Column:
        return column_of(self.task, self.metric)

    @property
    def name(self) -> str:
        return f"{self.column.label} under {self.modality} noise"


@dataclass(frozen=True)
class Settings:
    """``worlds.analysis``: the primary endpoints, the equivalence margin per metric, the power."""

    endpoints: tuple[Endpoint, ...]
    margins: Mapping[str, float]
    power: float = power.POWER
    controls: frozenset[str] = frozenset({ORACLE})


def settings(config: Mapping[str, Any]) -> Settings:
    """``worlds.analysis`` of a resolved config, the schema's defaults for what it leaves out
    (a tree written before the section existed reads as the defaults)."""
    from cmgh.schema import fill_defaults, schema

    node = dict(config.get(SECTION, {}).get("analysis", {}) or {})
    fill_defaults(schema()["properties"][SECTION]["properties"]["analysis"], node)
    endpoints = tuple(Endpoint(str(e["task"]), str(e["metric"]), str(e["modality"])) for e in node["primary"])
    return Settings(endpoints, {str(k): float(v) for k, v in node["margins"].items()}, float(node["power"]),
                    frozenset({ORACLE, *map(str, node["controls"])}))


@dataclass
class VariantResult:
    """One variant on one endpoint: pooled gain, slope, equivalence, detectable effect, adjusted p."""

    variant: str
    gain: pooled.Pooled | None
    slope: pooled.Pooled | None
    equivalence: power.Equivalence | None
    mde: float
    seeds_for_margin: int | None
    q_gain: float = math.nan
    q_slope: float = math.nan
    control: bool = False  # a declared control (worlds.analysis.controls): its own p, outside the family

    @property
    def role(self) -> str:
        return "positive control" if self.variant == ORACLE else "control" if self.control else "method"


@dataclass
class EndpointResult:
    endpoint: Endpoint
    backbone: str
    margin: float | None
    cell_gap: headroom.Gap | None  # at the modality's largest rate: decides the headroom
    mean_gap: float  # the baseline's gap averaged over the modality's noisy worlds (the share's denominator)
    variants: list[VariantResult] = field(default_factory=list)

    @property
    def headroom(self) -> bool:
        return self.cell_gap is not None and self.cell_gap.resolved


def _variant(values: pd.DataFrame, endpoint: Endpoint, backbone: str, variant: str, margin: float | None, target: float) -> VariantResult:
    col = endpoint.column
    d = pooled.differences(values, backbone, col.task, col.metric, variant)
    d = d[pooled.on_modality(d, endpoint.modality)] if not d.empty else d
    sign = -1.0 if col.lower_is_better else 1.0  # every number below reads "positive = better"
    d = d.assign(d=sign * d["d"]) if not d.empty else d
    gain, slope = (pooled.pooled_gain(d), pooled.slope(d)) if not d.empty else (None, None)
    equivalence = power.equivalence(gain.per_seed, margin) if gain is not None and margin else None
    mde = power.detectable_effect(gain.sd, gain.n, ALPHA, target) if gain is not None else math.nan
    seeds = power.seeds_for(margin, gain.sd, ALPHA, target) if gain is not None and margin else None
    return VariantResult(variant, gain, slope, equivalence, mde, seeds)


def analyse(values: pd.DataFrame, analysis: Settings, variants: Sequence[str]) -> list[EndpointResult]:
    """Every primary endpoint × backbone × variant (``variants``: the compared ones, in order);
    ``values`` as :func:`cmgh.report.pooled.seed_values`, flagged runs already left out."""
    results = []
    for endpoint in analysis.endpoints:
        col = endpoint.column
        for backbone in sorted(values.backbone.unique()):
            rates = headroom.rates(values, endpoint.modality)
            gaps = [g for g in (headroom.gap(values, backbone, col, endpoint.modality, r) for r in rates) if g is not None]
            result = EndpointResult(endpoint, backbone, analysis.margins.get(endpoint.metric),
                                    headroom.cell_gap(values, backbone, col, endpoint.modality),
                                    sum(g.mean for g in gaps) / len(gaps) if gaps else math.nan)
            if result.headroom:
                result.variants = [_variant(values, endpoint, backbone, v, result.margin, analysis.power) for v in variants]
                for v in result.variants:
                    v.control = v.variant in analysis.controls
            results.append(result)
    _correct(results)
    return results


def _correct(results: Iterable[EndpointResult]) -> None:
    """Benjamini-Hochberg over the family: pooled gains and slopes of the non-control variants."""
    tested = [(v, kind) for r in results for v in r.variants if not v.control for kind in ("gain", "slope")
              if getattr(v, kind) is not None and getattr(v, kind).n > 1]
    q = stats.false_discovery(pd.Series([getattr(v, kind).p for v, kind in tested], dtype=float))
    for (v, kind), qi in zip(tested, q, strict=True):
        setattr(v, f"q_{kind}", float(qi))
    for r in results:
        for v in r.variants:
            if v.control:  # outside the family: its own p
                v.q_gain = v.gain.p if v.gain is not None else math.nan
                v.q_slope = v.slope.p if v.slope is not None else math.nan


def family_size(results: Iterable[EndpointResult]) -> int:
    return sum(1 for r in results for v in r.variants if not v.control for kind in (v.gain, v.slope) if kind is not None and kind.n > 1)


# --------------------------------------------------------------------------- wording


def verdict(result: EndpointResult, v: VariantResult) -> str:
    """``better``/``worse`` (adjusted p < 0.05; the control's own p), ``equivalent within ±2.0``, or
    ``inconclusive (MDE 10.6)``."""
    col = result.endpoint.column
    if v.gain is None or v.gain.n < 2:
        return "no paired seeds" if v.gain is None else "one seed: no test"
    if v.q_gain < ALPHA:
        return "better" if v.gain.mean > 0 else "worse"
    if v.equivalence is not None and v.equivalence.equivalent:
        return f"equivalent within ±{stats.number(v.equivalence.margin, col.digits)}"
    return f"inconclusive (MDE {stats.number(v.mde, col.digits)})"


def share(result: EndpointResult, v: VariantResult) -> str:
    """The pooled gain as a share of the baseline's mean gap over the same worlds (the gap taken as
    known: the interval is the gain's, divided by it)."""
    if v.gain is None or not (math.isfinite(result.mean_gap) and result.mean_gap > 0):
        return "—"
    scale = 100.0 / result.mean_gap

    def pct(x: float) -> str:  # round() first: -0.3 % is "0", not "−0"
        return str(round(x * scale)).replace("-", stats.MINUS)

    if v.gain.n < 2:
        return f"{pct(v.gain.mean)} %"
    return f"{pct(v.gain.mean)} % [{pct(v.gain.low)}, {pct(v.gain.high)}]"


def _slope_text(v: VariantResult, digits: int) -> str:
    if v.slope is None:
        return "—"
    s, fmt = v.slope, lambda x: stats.number(x, digits + 1)
    text = f"{stats.number(s.mean, digits + 1, plus=True)}" + (f" [{fmt(s.low)}, {fmt(s.high)}]" if s.n > 1 else "")
    return text + (f", adjusted p = {v.q_slope:.2f}" if math.isfinite(v.q_slope) and not v.control else f", {stats.p_text(v.q_slope)}" if v.control else "")


def _headroom_clause(result: EndpointResult) -> str:
    col, g = result.endpoint.column, result.cell_gap
    if g is None:
        return "headroom unknown: no baseline runs of both the clean and the noisiest world"
    where = f"the baseline's clean-vs-noisy gap at {result.endpoint.modality} {g.rate:g} is {g.format(col.digits)}"
    return f"headroom: {where}" if result.headroom else f"{headroom.NO_HEADROOM} ({where}, not resolved)"


def headroom_sentence(result: EndpointResult) -> str:
    """``MSR-VTT R@10 under text noise (ms): headroom: the baseline's clean-vs-noisy gap at text 0.6 is …``."""
    return f"{result.endpoint.name} ({result.backbone}): {_headroom_clause(result)}."


def endpoint_table(result: EndpointResult) -> str:
    """A row per variant: pooled gain, share of the gap, slope, 90 % TOST interval, MDE, seeds for
    a margin-sized effect, verdict."""
    col = result.endpoint.column
    rows = []
    for v in result.variants:
        eq = v.equivalence
        rows.append({
            "variant": f"`{v.variant}`" + (f" ({v.role})" if v.control else ""),
            "pooled gain": v.gain.format(col.digits) + (f", adjusted p = {v.q_gain:.2f}" if math.isfinite(v.q_gain) and not v.control else "") if v.gain else "—",
            "share of the gap": share(result, v),
            "slope per unit rate": _slope_text(v, col.digits),
            "90 % interval (TOST)": f"[{stats.number(eq.low, col.digits)}, {stats.number(eq.high, col.digits)}]" if eq and eq.n > 1 else "—",
            f"MDE ({result.endpoint.name})": stats.number(v.mde, col.digits) if math.isfinite(v.mde) else "—",
            f"seeds for ±{result.margin:g}" if result.margin else "seeds for the margin": stats.seeds_text(v.seeds_for_margin),
            "verdict": verdict(result, v),
        })  # fmt: skip
    return to_markdown(pd.DataFrame(rows)).rstrip("\n")


def section(results: Sequence[EndpointResult]) -> str:
    """The page's primary-endpoint section: per endpoint, its headroom, then its table."""
    if not results:
        return "No primary endpoint is declared (`worlds.analysis.primary`)."
    parts = []
    for r in results:
        parts.append(f"**{r.endpoint.name}**, {r.backbone}: {_headroom_clause(r)}.")
        if r.variants:
            parts.append(endpoint_table(r))
    return "\n\n".join(parts)


def conclusions(results: Sequence[EndpointResult], variants: Sequence[str]) -> list[str]:
    """Sentences from the numbers: headroom, the control, each variant's verdict, the family."""
    lines = []
    if ORACLE not in variants:
        lines.append("No positive control in this study (no `oracle` variant): nothing shows how much of the gap a perfect noise filter "
                     "would recover, so a method's failure to gain cannot be told from a testbed that cannot reward one.")
    for r in results:
        col = r.endpoint.column
        if not r.headroom:
            lines.append(headroom_sentence(r))
            continue
        said = [headroom_sentence(r).rstrip(".")]
        for v in r.variants:
            if v.gain is None:
                continue
            text = f"`{v.variant}`{f' ({v.role})' if v.control else ''} {v.gain.format(col.digits)} ({share(r, v)} of the gap): {verdict(r, v)}"
            if v.slope is not None and v.slope.n > 1 and v.q_slope < ALPHA:
                text += f"; its gain {'rises' if v.slope.mean > 0 else 'falls'} with the rate ({_slope_text(v, col.digits)})"
            said.append(text)
        lines.append(". ".join(said) + ".")
    size = family_size(results)
    resolved = sum(1 for r in results for v in r.variants if not v.control for pair in ((v.gain, v.q_gain), (v.slope, v.q_slope))
                   if pair[0] is not None and pair[1] < ALPHA)
    lines.append(f"Primary family: {size} tests (pooled gain and slope of each variant on each endpoint with headroom); "
                 f"{resolved} survive Benjamini-Hochberg at {ALPHA:.2g}. Everything below the primary section is exploratory.")
    return lines


def compared_variants(values: pd.DataFrame, configured: Sequence[str]) -> list[str]:
    """The variants compared with the baseline, in config order, the positive control first."""
    found = set(values["variant"]) - {layout.BASELINE_VARIANT, layout.RANDOM_VARIANT}
    order = [v for v in dict.fromkeys([ORACLE, *configured]) if v in found]
    return order + sorted(found - set(order))

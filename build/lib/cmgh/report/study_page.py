"""The results page of a noise ablation or study (``<worlds.root>/README.md``): where harmonization
helps, and whether the conflict cosine marks the misaligned triplets, stated from the trees' numbers.

Two questions, each answered per modality misaligned and noise rate, paired by seed
(:mod:`cmgh.report.stats`: a difference is called only when its interval excludes 0 and the test agrees):

* the gain of every variant over the baseline on each downstream task's headline metric
  (:func:`cmgh.report.gain_vs_noise.gain_vs_noise`);
* the baseline's noise detection over training (each run's ``noise_training`` windows): every
  indicator's AUROC for the misaligned modality, averaged over the run's windows, and the conflict
  cosine at the representation against the per-sample loss of the same pair (:data:`MATCHED_LOSS`).

The conclusions are sentences built from those comparisons, whichever way they come out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import layout
from cmgh.errors import DataError
from cmgh.worlds import BOTH, NoiseSetting
from cmgh.io import atomic_write_text
from cmgh.report import detection_over_training, headroom, pooled, primary, quality_curve, ranking, run_checks, stats
from cmgh.report.detection_over_training import CONFLICT, MATCHED_LOSS, TARGET
from cmgh.report.collect import configured_variants, read_yaml, noise_setting_of
from cmgh.report.columns import DOWNSTREAM, HEADLINE, HEADROOM_COLUMNS
from cmgh.plots import savefig
from cmgh.report.gain_vs_noise import TABLE as GAIN_TABLE, curves, figure_noise_gain, on_curve
from cmgh.report.tables import to_markdown

FIGURE = "noise_detection"


def _settings(roots: Sequence[Path]) -> dict[Path, NoiseSetting]:
    return {Path(root): noise_setting_of(Path(root)) for root in roots}


def _tree_config(root: Path) -> dict[str, Any]:
    path = layout.resolved_config(root)
    return read_yaml(path) if path.is_file() else {}


def resolution(config: dict[str, Any]) -> list[str]:
    """What one test item moves each downstream metric by, from the generated sets' sizes."""
    synth = config.get("data", {}).get("synth", {})
    lines = []
    kinetics, msrvtt, audioset = synth.get("kinetics", {}), synth.get("msrvtt", {}), synth.get("audioset", {})
    if kinetics:
        n = int(kinetics.get("classes", 0)) * int(kinetics.get("test_per_class", 0))
        lines.append(f"Kinetics: {n} test clips over {kinetics.get('classes')} classes (one clip = {100 / n:.2f} points of top-1)" if n else "")
    if msrvtt:
        n = int(msrvtt.get("test", 0))
        lines.append(f"MSR-VTT: {n} test videos (one video = {100 / n:.2f} points of R@10)" if n else "")
    if audioset:
        lines.append(f"AudioSet: {audioset.get('eval')} eval clips (mAP over classes: no fixed step per clip)")
    return [line for line in lines if line]


def _design(config: dict[str, Any], settings: dict[Path, NoiseSetting]) -> str:
    pretrain, synth = config.get("pretrain", {}), config.get("data", {}).get("synth", {})
    how = synth.get("howto100m", {})
    segments = int(how.get("videos", 0)) * int(how.get("segments_per_video", 0))
    samples = int(pretrain.get("steps", 0)) * int(pretrain.get("batch_size", 0))
    trees = ", ".join(f"`{s.name}`" for s in settings.values())
    variants = ", ".join(f"`{v}`" for v in config.get("variants", {}))
    lines = [
        f"- Trees (one generated world each, `data.noise` set by `worlds`): {trees}.",
        f"- Variants: {variants}; backbones {', '.join(config.get('model', {}).get('backbones', []))}; "
        f"seeds {', '.join(str(s) for s in pretrain.get('seeds', []))}.",
        f"- Pre-training: {pretrain.get('steps')} steps of {pretrain.get('batch_size')} triplets = {samples} samples over "
        f"{segments} HowTo100M segments ({samples / segments:.1f} passes)" if segments else "",
        *(f"- {line}." for line in resolution(config)),
    ]
    return "\n".join(line for line in lines if line)


# --------------------------------------------------------------------------- downstream gains


def gain_tables(gains: pd.DataFrame) -> str:
    """Per modality and task: a row per variant, a column per noise rate, ``+2.1 [−0.4, 4.6], p = 0.09, n = 5``."""
    parts = []
    for modality in curves(gains):
        curve = on_curve(gains, modality)
        for backbone in sorted(curve["backbone"].unique()):
            for task in DOWNSTREAM:
                rows = curve[(curve.task == task) & (curve.backbone == backbone)]
                if rows.empty:
                    continue
                col = HEADLINE[task]
                rates = sorted(rows["noise_rate"].unique())
                shown = pd.DataFrame({"variant": list(dict.fromkeys(rows["variant"]))})
                for rate in rates:
                    at = rows[rows.noise_rate == rate].set_index("variant")
                    shown[f"{modality} {rate:g}"] = [_claim(at.loc[v], col.digits) if v in at.index else "" for v in shown["variant"]]
                parts.append(f"**{col.label}**, {backbone}, {_modality(modality)} misaligned, gain over `{layout.BASELINE_VARIANT}`:\n\n"
                             + to_markdown(shown).rstrip("\n"))
    return "\n\n".join(parts)


def _claim(row: pd.Series, digits: int) -> str:
    c = _comparison(row)
    return c.format(digits) + (" **better**" if c.sign > 0 else " **worse**" if c.sign < 0 else "")


def _comparison(row: pd.Series) -> stats.Comparison:
    n = int(row["n"])
    return stats.Comparison(float(row["mean"]), float(row["std"]), float(row["low"]), float(row["high"]), float(row["p"]), n, "", "", None)


def _modality(modality: str) -> str:
    return "audio and text" if modality == BOTH else modality


def family_sentence(what: str, resolved: int, total: int, surviving: int) -> str:
    """How many of a family's comparisons are called, against what chance alone would call."""
    expected = (1 - stats.LEVEL) * total
    return (f"Of the {total} {what}, {resolved} are resolved at p < {1 - stats.LEVEL:.2g} (about {expected:.1f} would be by chance alone "
            f"if nothing differed); {surviving} survive the Benjamini-Hochberg false-discovery correction at {1 - stats.LEVEL:.2g} over all {total}.")


def gain_conclusions(gains: pd.DataFrame) -> list[str]:
    """One sentence per variant: the resolved gains and losses (modality, rate, task, numbers; the
    false-discovery-adjusted p), or none; then the family's count against chance."""
    gains = gains.assign(q=stats.false_discovery(gains["p"].where(gains["n"] > 1)))
    lines = []
    for (backbone, variant), rows in gains.groupby(["backbone", "variant"], sort=False):
        found = {1: [], -1: []}
        for _, row in rows.sort_values(["modality", "noise_rate"]).iterrows():
            c = _comparison(row)
            if c.sign:
                col = HEADLINE[row["task"]]
                where = "no injected noise" if row["noise_rate"] == 0 else f"{_modality(row['modality'])} noise {row['noise_rate']:g}"
                found[c.sign].append(f"{col.label} at {where} by {c.format(col.digits)} (adjusted p = {row['q']:.2f})")
        seeds = int(rows["n"].max())
        if not found[1] and not found[-1]:
            lines.append(f"`{backbone}/{variant}` neither helps nor hurts at any noise rate on any task that {seeds} seeds resolve.")
            continue
        said = []
        if found[1]:
            said.append("helps: " + "; ".join(found[1]))
        if found[-1]:
            said.append("hurts: " + "; ".join(found[-1]))
        lines.append(f"`{backbone}/{variant}` " + ". It ".join(said) + f". Every other setting and task: not resolved ({seeds} seeds).")
    signs = [_comparison(row).sign for _, row in gains.iterrows()]
    resolved = sum(1 for sign in signs if sign)
    surviving = sum(1 for sign, q in zip(signs, gains["q"], strict=True) if sign and q < 1 - stats.LEVEL)
    lines.append(family_sentence("downstream comparisons with the baseline", resolved, int((gains["n"] > 1).sum()), surviving))
    return lines


# --------------------------------------------------------------------------- noise detection over training


def detection(roots: Sequence[Path], settings: dict[Path, NoiseSetting]) -> pd.DataFrame:
    """The baseline's AUROC of every indicator for the misaligned modality, averaged over each run's
    windows: one row per noisy tree, backbone and seed (columns ``modality, noise_rate, backbone,
    seed`` and one per indicator)."""
    frames = []
    for root in roots:
        setting = settings[Path(root)]
        if setting.rate == 0:
            continue
        data = detection_over_training.per_seed(Path(root))
        data = data[(data["variant"] == layout.BASELINE_VARIANT) & (data["metric"] == "auroc") & (data["target"] == TARGET[setting.modality])]
        if data.empty:
            continue
        names = [c for c in data.columns if c not in (*detection_over_training.KEYS, "seed", "n", "n_noisy")]
        means = data.groupby(["backbone", "seed"])[names].mean().reset_index()
        frames.append(means.assign(modality=setting.modality, noise_rate=setting.rate))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def detection_table(table: pd.DataFrame) -> str:
    """A row per modality, rate and backbone: every indicator's mean AUROC [interval over seeds], and
    the conflict cosine minus the matched loss, paired by seed."""
    if table.empty:
        return "No baseline run of a noisy tree has a `noise_training` evaluation."
    names = [c for c in table.columns if c not in ("modality", "noise_rate", "backbone", "seed")]
    rows = []
    for (modality, rate, backbone), group in table.groupby(["modality", "noise_rate", "backbone"], sort=True):
        row = {"misaligned": _modality(modality), "rate": f"{rate:g}", "backbone": backbone, "seeds": group["seed"].nunique()}
        for name in names:
            values = group[name].dropna().to_numpy()
            low, high, _ = stats.interval(values)
            row[name] = (f"{values.mean():.3f} [{stats.number(low, 3)}, {stats.number(high, 3)}]" if len(values) > 1
                         else f"{values.mean():.3f}" if len(values) else "")
        c = _conflict_vs_loss(group, modality)
        row[f"{CONFLICT} − matched loss"] = f"− {MATCHED_LOSS[TARGET[modality]]}: {c.format(3)}" if c else ""
        rows.append(row)
    return to_markdown(pd.DataFrame(rows)).rstrip("\n")


def _conflict_vs_loss(group: pd.DataFrame, modality: str) -> stats.Comparison | None:
    loss = MATCHED_LOSS[TARGET[modality]]
    if CONFLICT not in group or loss not in group:
        return None
    by_seed = group.set_index("seed")
    return stats.paired(by_seed[CONFLICT], by_seed[loss])


def detection_conclusions(table: pd.DataFrame) -> list[str]:
    """Whether the conflict cosine beats the matched per-sample loss, and chance, at each rate."""
    if table.empty:
        return []
    better, worse, open_ = [], [], []
    chance = []
    compared = []
    for (modality, rate, backbone), group in table.groupby(["modality", "noise_rate", "backbone"], sort=True):
        where = f"{_modality(modality)} {rate:g} ({backbone})"
        c = _conflict_vs_loss(group, modality)
        if c is None:
            continue
        compared.append(c)
        (better if c.sign > 0 else worse if c.sign < 0 else open_).append(f"{where}: {c.format(3)}")
        vs_chance = stats.compare(group[CONFLICT].dropna().to_numpy() - 0.5)
        if vs_chance.sign > 0:
            chance.append(where)
    loss_name = "the per-sample loss of the misaligned pair (loss_vt for text, loss_va for audio)"
    lines = []
    if better:
        lines.append(f"The conflict cosine separates noisy from clean triplets better than {loss_name} at " + "; ".join(better) + ".")
    else:
        lines.append(f"The conflict cosine does not separate noisy from clean triplets better than {loss_name} at any rate.")
    if worse:
        lines.append("It separates them worse at " + "; ".join(worse) + ".")
    if open_:
        lines.append("Conflict cosine minus that loss not resolved at " + "; ".join(open_) + ".")
    q = stats.false_discovery(pd.Series([c.p if c.n > 1 else float("nan") for c in compared], dtype=float))
    surviving = sum(1 for c, qi in zip(compared, q, strict=True) if c.sign and qi < 1 - stats.LEVEL)
    lines.append(family_sentence("comparisons of the conflict cosine with the matched loss", len(better) + len(worse), len(compared), surviving))
    settings = table.groupby(["modality", "noise_rate", "backbone"]).ngroups
    lines.append(f"Its AUROC (averaged over training) is resolved above chance (0.5) at {len(chance)} of {settings} settings"
                 + (f": {', '.join(chance)}." if chance else "."))
    return lines


def figure_detection(roots: Sequence[Path], settings: dict[Path, NoiseSetting], out: Path) -> list[Path]:
    """The baseline's AUROC over training: a row per modality, a panel per noisy rate, a line per
    indicator with its interval over seeds."""
    import matplotlib.pyplot as plt

    noisy = [(root, s) for root, s in settings.items() if s.rate > 0]
    if not noisy:
        return []
    modalities = list(dict.fromkeys(s.modality for _, s in sorted(noisy, key=lambda x: x[1].rate)))
    rates = sorted({s.rate for _, s in noisy})
    fig, axes = plt.subplots(len(modalities), len(rates), figsize=(3.6 * len(rates), 2.9 * len(modalities)), squeeze=False, sharex=True, sharey=True)
    handles: dict[str, Any] = {}
    for root, setting in noisy:
        ax = axes[modalities.index(setting.modality)][rates.index(setting.rate)]
        table = detection_over_training.aggregate(detection_over_training.per_seed(root), (layout.BASELINE_VARIANT,))
        panel = table[(table["variant"] == layout.BASELINE_VARIANT) & (table["metric"] == "auroc") & (table["target"] == TARGET[setting.modality])]
        for i, name in enumerate(detection_over_training.indicators(table)):
            rows = panel.sort_values("step_to")
            if rows[f"{name} mean"].notna().any():
                line = ax.plot(rows["step_to"], rows[f"{name} mean"], marker="o", ms=3, lw=1.2, color=f"C{i}", label=name)[0]
                ax.fill_between(rows["step_to"], rows[f"{name} low"], rows[f"{name} high"], color=line.get_color(), alpha=0.15, lw=0)
                handles[name] = line
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{_modality(setting.modality)} misaligned, rate {setting.rate:g}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("training step (window's last)")
    for row in axes:
        row[0].set_ylabel("AUROC")
    fig.suptitle(f"{layout.BASELINE_VARIANT}: noise detection over training (mean, {100 * stats.LEVEL:g} % interval over seeds)", y=1.02)
    fig.tight_layout()
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=8, loc="upper center", ncol=len(handles), bbox_to_anchor=(0.5, 0.0), frameon=False)
    paths = savefig(fig, out, FIGURE)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- the page


def headroom_section(values: pd.DataFrame) -> str:
    """Per backbone, noise modality and headroom column: random init, the baseline per world and the gap."""
    parts = []
    for backbone in sorted(values.backbone.unique()):
        for modality in headroom.modalities(values):
            for col in HEADROOM_COLUMNS:
                if values[(values.task == col.task) & (values.metric == col.metric)].empty:
                    continue
                g = headroom.cell_gap(values, backbone, col, modality)
                cell = "headroom" if g is not None and g.resolved else headroom.NO_HEADROOM
                parts.append(f"**{col.label}**, {backbone}, {_modality(modality)} misaligned ({cell}):\n\n"
                             + headroom.table(values, backbone, col, modality))
    return "\n\n".join(parts)


def build_page(roots: Sequence[Path], out: Path, gains: pd.DataFrame) -> tuple[Path, list[Path]]:
    """Write ``out/README.md`` (and its detection figure) from the trees and their gain table."""
    settings = _settings(roots)
    config = next((c for c in (_tree_config(Path(r)) for r in roots) if c), {})
    analysis = primary.settings(config)
    values = pooled.seed_values(roots)
    flags = run_checks.flag_runs(values, run_checks.final_losses(roots), [HEADLINE[t] for t in DOWNSTREAM], analysis.margins)
    variants = primary.compared_variants(values, list(dict.fromkeys(v for r in roots for v in configured_variants(r))))  # the clean world may run fewer (worlds.clean_variants)
    results = primary.analyse(run_checks.excluded(values, flags), analysis, variants)
    detected = detection(roots, settings)
    figures = figure_detection(roots, settings, layout.figures_dir(out))
    trees = {v: c for c in (_tree_config(Path(r)) for r in reversed(roots)) for v in c.get("variants", {})}
    dose = quality_curve.points(results, trees, roots, settings)
    figures += quality_curve.figure(dose, layout.figures_dir(out))
    name = config.get("name", "study")
    conclusions = [*primary.conclusions(results, variants), *(f"Exploratory: {line}" for line in gain_conclusions(gains)),
                   *detection_conclusions(detected)]
    level = f"{100 * stats.LEVEL:g} %"
    floor_known = bool((values["variant"] == layout.RANDOM_VARIANT).any())
    text = "\n\n".join([
        f"# Noise {name}: where does harmonization help, and does the conflict cosine mark noisy triplets?",
        f"Generated by `cmgh report --noise-gain` (the workflow's `worlds` rule) from the trees of config `{name}` "
        "listed below; every number is a mean over seeds, paired by seed, with its "
        f"{level} interval and p (`cmgh.report.stats`: bootstrap BCa from 3 seeds, Student's t at 2; paired t-test, "
        "Wilcoxon signed-rank from 6 non-zero differences). A difference is called better or worse only when its interval "
        "excludes 0 and p < 0.05. Results depend on the machine (floating point differs between CPUs).",
        "## Conclusions",
        "\n".join(f"- {line}" for line in conclusions) or "- Nothing to compare.",
        "## Design",
        _design(config, settings),
        "## Headroom",
        f"What the noise costs the baseline: absolute metrics per world, mean [{level} t interval] over seeds, the random-init "
        "encoder's as the floor (`evaluate.random_init`), and the gap clean − noisy (noisy − clean for lower-is-better metrics), "
        "paired by seed where the worlds ran common seeds (a seed fixes the initialization and data order in every world), else "
        "Welch's t. A task × modality cell whose gap at its largest rate is not resolved has no headroom: no method can win "
        "there, and it is left out of the primary comparisons and their multiple-testing family (`cmgh.report.headroom`).",
        headroom_section(values) or "No baseline evaluation to show.",
        "## Primary endpoints",
        "Declared in `worlds.analysis` before the runs. Per variant: the gain over the baseline pooled over the modality's "
        f"noisy worlds (per seed the mean over worlds, then the {level} t interval over seeds), its share of the baseline's mean gap, "
        "the slope of the gain against the noise rate (clean world included; per seed, then over seeds), the 90 % interval of "
        "the two one-sided tests against the margin, the minimum detectable effect of the paired t-test at the seeds run "
        f"(two-sided 0.05, power {analysis.power:g}, noncentral t) and the seeds a margin-sized effect needs. Verdict: better or worse "
        "when the pooled gain survives Benjamini-Hochberg over the primary family; equivalent when the 90 % interval lies "
        "within ±margin; else inconclusive. The controls declared in `worlds.analysis.controls` (the positive control `oracle`, "
        "dose-response and mechanism controls) are tested outside the family, each with its own p (`cmgh.report.primary`).",
        primary.section(results),
        "## Methods ranked, with their cost",
        "Every compared variant on each primary endpoint, best pooled gain first (the gain, interval and verdict of the section "
        "above), beside its step time in baseline steps: the baseline's median throughput over the variant's, paired by world and "
        "seed, median over them. Throughput includes the loader's wait, and the study's jobs shared the machine's cores, so the "
        "ratios are rough and machine-dependent; `benchmarks/train_step.py --rivals` measures them in one process "
        "(`cmgh.report.ranking`). The comparison is at equal steps; `pretrain.budget: wall_time` gives each variant the "
        "baseline's wall time instead (`pretrain.step_cost` per variant).",
        ranking.section(results, ranking.throughputs(roots)),
        "## Benefit against detection quality",
        "Each curriculum variant's pooled gain on a primary endpoint (as above) at its detector's AUROC for the misaligned "
        "pairs: the `quality` controls (ground truth plus noise) at their set AUROC and the `oracle` at 1, joined per selection "
        "rule; the `conflict` and `loss` scorers (open squares) at the AUROC their own runs measured (`noise_training`, averaged "
        "over training, seeds and the modality's noisy worlds). Flat up to AUROC 1: the schedule cannot exploit even a perfect "
        "detector; rising: read the curve at the cosine's AUROC for what a better detector would be worth "
        "(`cmgh.report.quality_curve`).",
        *([f"![benefit against detection quality](figures/{quality_curve.FIGURE}.png)"] if dose else []),
        quality_curve.section(dose, results) or "No curriculum variant on a primary endpoint with headroom.",
        "## Flagged runs",
        run_checks.flags_section(flags, floor_known),
        "## Downstream gain over the baseline (exploratory: every task and world)",
        f"![gain over the baseline vs noise rate](figures/{layout.NOISE_GAIN}.png)",
        gain_tables(gains) or "No variant was compared with the baseline.",
        "## Noise detection over training (baseline)",
        f"Each indicator's AUROC for the misaligned modality, averaged over the run's windows "
        f"(`evaluate.noise_training.window` steps each), mean [{level} interval] over seeds; the last column is the "
        f"conflict cosine at the representation minus the per-sample loss of the misaligned pair, paired by seed.",
        *([f"![noise detection over training](figures/{FIGURE}.png)"] if figures else []),
        detection_table(detected),
    ])  # fmt: skip
    page = out / layout.STUDY_PAGE
    atomic_write_text(page, text.rstrip() + "\n")
    return page, figures


def build_noise_gain(roots: Sequence[Path], out: Path) -> dict[str, list[Path]]:
    """The cross-tree part alone (config/ablation.yaml, config/study.yaml): ``tables/noise_gain.csv``,
    its figure (:mod:`cmgh.report.gain_vs_noise`) and the results page."""
    import matplotlib

    matplotlib.use("Agg")
    rates = {noise_setting_of(root).rate for root in roots}
    if len(rates) < 2:
        raise DataError(f"--noise-gain: the trees hold {len(rates)} distinct noise rate(s) {sorted(rates)}; expected at least 2")
    table = layout.tables_dir(out) / GAIN_TABLE
    figures = figure_noise_gain(roots, layout.figures_dir(out), table)
    page, page_figures = build_page(roots, out, pd.read_csv(table))
    return {"tables": [table], "figures": figures + page_figures, "pages": [page]}

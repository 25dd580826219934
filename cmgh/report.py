"""Tables, figures and a generated summary from a results folder.

Reads ``<results>/eval/{task}/{backbone}/{variant}/seed{seed}/metrics.json`` (see
:mod:`cmgh.evaluate.tasks`) and ``<results>/pretrain/{backbone}/{variant}/seed{seed}/`` (train
logs and per-sample score dumps), and writes:

* ``tables/metrics_long.csv`` (one row per task, backbone, variant, seed, metric) and
  ``tables/metrics_wide.csv`` (one row per run, one column per ``task/metric``);
* ``tables/ablation.{csv,md,tex}``: backbone x variant (incl. ``random``), mean +- std over seeds,
  best mean per column in bold (lowest for rank metrics);
* ``tables/summary.md``: one generated paragraph per backbone comparing each component with the
  baseline and pre-training with random init;
* ``figures/{conflict_cosine_hist,fractions,noise_roc}.{png,pdf}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh.errors import DataError
from cmgh.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

VARIANT_ORDER = ("random", "baseline", "gr", "gcl", "gr_gcl")
COMPONENTS = ("gr", "gcl", "gr_gcl")
NOISE_INDICATORS = ("cos_representation", "cos_representation_exact", "cos_parameters", "loss_va", "loss_vt", "loss_total")


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    label: str
    lower_is_better: bool = False
    digits: int = 1


ABLATION_COLUMNS: tuple[Column, ...] = (
    Column("kinetics", "top1", "K top-1"),
    Column("kinetics", "top5", "K top-5"),
    Column("audioset", "mAP", "AS mAP", digits=3),
    Column("audioset", "mAUC", "AS mAUC", digits=3),
    Column("audioset", "d_prime", "AS d'", digits=2),
    Column("msrvtt", "t2v_R@1", "MSR R@1"),
    Column("msrvtt", "t2v_R@5", "MSR R@5"),
    Column("msrvtt", "t2v_R@10", "MSR R@10"),
    Column("msrvtt", "t2v_MedR", "MSR MedR", lower_is_better=True),
    *(Column("noise", f"auroc/{name}/either", f"AUROC {name}", digits=3) for name in NOISE_INDICATORS),
)
# The headline metric of each task in the generated summary.
HEADLINE = {
    "kinetics": Column("kinetics", "top1", "Kinetics top-1"),
    "audioset": Column("audioset", "mAP", "AudioSet mAP", digits=3),
    "msrvtt": Column("msrvtt", "t2v_R@10", "MSR-VTT R@10"),
    "noise": Column("noise", "auroc/cos_parameters/either", "noise AUROC (parameter cosine)", digits=3),
}


# --------------------------------------------------------------------------- collection


def collect(results: str | Path) -> pd.DataFrame:
    """Every numeric top-level metric of every eval run: long table ``task, backbone, variant, seed, metric, value``."""
    root = Path(results) / "eval"
    rows = []
    for path in sorted(root.glob("*/*/*/seed*/metrics.json")):
        task, backbone, variant, seed_dir = path.parts[-5:-1]
        try:
            seed = int(seed_dir.removeprefix("seed"))
            data = json.loads(path.read_text())
        except (ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a metrics file ({exc.__class__.__name__}: {str(exc)[:120]})") from None
        for key, value in data.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                continue
            rows.append({"task": task, "backbone": backbone, "variant": variant, "seed": seed, "metric": key,
                         "value": math.nan if value is None else float(value)})
    if not rows:
        raise DataError(f"{root}: no metrics.json found (expected eval/{{task}}/{{backbone}}/{{variant}}/seed{{seed}}/metrics.json)")
    return pd.DataFrame(rows)


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, variant, seed), one column per ``task/metric``."""
    table = long.assign(column=long["task"] + "/" + long["metric"]).pivot_table(
        index=["backbone", "variant", "seed"], columns="column", values="value", aggfunc="first", dropna=False
    )
    table.columns.name = None
    return table.reset_index()


def _variant_key(name: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(name), "") if name in VARIANT_ORDER else (len(VARIANT_ORDER), name)


def ablation(long: pd.DataFrame, columns: Sequence[Column] = ABLATION_COLUMNS) -> pd.DataFrame:
    """Mean, std and seed count per (backbone, variant) and column: columns ``<label> mean``, ``<label> std``, ``<label> n``."""
    runs = long[["backbone", "variant"]].drop_duplicates()
    keys = sorted(map(tuple, runs.to_numpy()), key=lambda bv: (bv[0], _variant_key(bv[1])))
    out = pd.DataFrame(keys, columns=["backbone", "variant"])
    for col in columns:
        sel = long[(long.task == col.task) & (long.metric == col.metric)]
        stats = sel.groupby(["backbone", "variant"])["value"].agg(["mean", "std", "count"])
        merged = out.merge(stats, left_on=["backbone", "variant"], right_index=True, how="left")
        out[f"{col.label} mean"] = merged["mean"].to_numpy()
        out[f"{col.label} std"] = merged["std"].to_numpy()
        out[f"{col.label} n"] = merged["count"].fillna(0).astype(int).to_numpy()
    return out


def _cell(mean: float, std: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _best_rows(table: pd.DataFrame, col: Column) -> set[int]:
    values = table[f"{col.label} mean"].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return set()
    best = np.nanmin(values) if col.lower_is_better else np.nanmax(values)
    return {i for i, v in enumerate(values) if np.isfinite(v) and np.isclose(v, best, rtol=0, atol=1e-12)}


def formatted(table: pd.DataFrame, columns: Sequence[Column], bold: tuple[str, str]) -> pd.DataFrame:
    present = [c for c in columns if f"{c.label} mean" in table]
    out = table[["backbone", "variant"]].copy()
    for col in present:
        best = _best_rows(table, col)
        cells = []
        for i, (m, s) in enumerate(zip(table[f"{col.label} mean"], table[f"{col.label} std"])):
            text = _cell(float(m), float(s), col.digits)
            cells.append(f"{bold[0]}{text}{bold[1]}" if i in best else text)
        out[col.label + (" ↓" if col.lower_is_better else "")] = cells
    return out


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def to_latex(table: pd.DataFrame, caption: str) -> str:
    cols = list(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex_escape(caption)}}}",
        r"\begin{tabular}{" + "ll" + "r" * (len(cols) - 2) + "}",
        r"\toprule",
        " & ".join(_tex_escape(c).replace("↓", r"$\downarrow$") for c in cols) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        cells = []
        for value in row:
            text = str(value)
            bold = text.startswith("<<") and text.endswith(">>")
            text = _tex_escape(text.strip("<>")).replace("±", r"$\pm$")
            cells.append(rf"\textbf{{{text}}}" if bold else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- summary


def _paired(long: pd.DataFrame, backbone: str, col: Column, a: str, b: str) -> tuple[float, float, int] | None:
    """Mean and std over seeds of (a - b), paired by seed when both ran it, else unpaired (pooled std)."""
    sel = long[(long.backbone == backbone) & (long.task == col.task) & (long.metric == col.metric)]
    va = sel[sel.variant == a].set_index("seed")["value"].dropna()
    vb = sel[sel.variant == b].set_index("seed")["value"].dropna()
    if va.empty or vb.empty:
        return None
    common = va.index.intersection(vb.index)
    if len(common):
        diff = va.loc[common] - vb.loc[common]
        return float(diff.mean()), float(diff.std()) if len(diff) > 1 else math.nan, len(diff)
    std = math.sqrt(float(va.var() if len(va) > 1 else np.nan) + float(vb.var() if len(vb) > 1 else np.nan))
    return float(va.mean() - vb.mean()), std, min(len(va), len(vb))


def _verdict(col: Column, stats: tuple[float, float, int]) -> str:
    mean, std, n = stats
    sign = -1.0 if col.lower_is_better else 1.0
    text = f"{mean:+.{col.digits}f} ± {std:.{col.digits}f}" if np.isfinite(std) else f"{mean:+.{col.digits}f}"
    text += f" {col.label} (n={n})"
    if not np.isfinite(std):
        return text + ", a single seed: no spread to judge by"
    if abs(mean) < std or mean == 0:
        return text + ", within noise"
    return text + (", better" if sign * mean > 0 else ", worse")


def summary(long: pd.DataFrame) -> str:
    """Markdown: per backbone, one paragraph generated from the numbers."""
    parts = ["# Summary", "", "Differences are paired by seed: mean ± std over seeds of (variant − reference); "
             "a difference smaller than its std is called *within noise*.", ""]
    for backbone in sorted(long.backbone.unique()):
        variants = set(long[long.backbone == backbone].variant)
        sentences = []
        tasks = [t for t in HEADLINE if t in set(long[long.backbone == backbone].task)]
        if "baseline" in variants:
            for comp in COMPONENTS:
                if comp not in variants:
                    continue
                claims = [_verdict(HEADLINE[t], s) for t in tasks if (s := _paired(long, backbone, HEADLINE[t], comp, "baseline"))]
                if claims:
                    sentences.append(f"**{comp}** vs baseline: " + "; ".join(claims) + ".")
            if "random" in variants:
                claims = []
                for t in tasks:
                    if t == "noise":
                        continue
                    s = _paired(long, backbone, HEADLINE[t], "baseline", "random")
                    if s:
                        claims.append(_verdict(HEADLINE[t], s))
                if claims:
                    verdicts = [c.rsplit(", ", 1)[-1] for c in claims]
                    overall = "beat random init on every downstream task" if all(v == "better" for v in verdicts) else "did not clearly beat random init on every downstream task"
                    sentences.append(f"**Pre-training** (baseline vs random init) {overall}: " + "; ".join(claims) + ".")
        else:
            sentences.append("No baseline variant was evaluated, so no component can be compared.")
        parts += [f"## Backbone `{backbone}`", "", " ".join(sentences) if sentences else "Nothing to compare.", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures


def _savefig(fig: Any, directory: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        target = directory / f"{name}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        paths.append(target)
    return paths


def _pretrain_runs(results: Path) -> list[tuple[str, str, int, Path]]:
    runs = []
    for d in sorted((results / "pretrain").glob("*/*/seed*")):
        if d.is_dir():
            try:
                runs.append((d.parts[-3], d.parts[-2], int(d.name.removeprefix("seed")), d))
            except ValueError:
                continue
    return sorted(runs, key=lambda r: (r[0], _variant_key(r[1]), r[2]))


def _scores_frame(runs: Iterable[tuple[str, str, int, Path]]) -> pd.DataFrame:
    frames = []
    for backbone, variant, seed, d in runs:
        for f in sorted((d / "scores").glob("step_*.csv")):
            t = pd.read_csv(f, usecols=["step", "cos"])
            frames.append(t.assign(backbone=backbone, variant=variant, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _plot_cosine_hist(data: pd.DataFrame, out: Path, name: str, title: str) -> list[Path]:
    """One panel per backbone/variant: the cosine distribution early, midway and late in training."""
    import matplotlib.pyplot as plt

    keys = sorted(map(tuple, data[["backbone", "variant"]].drop_duplicates().to_numpy()), key=lambda k: (k[0], _variant_key(k[1])))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), sharey=True, squeeze=False)
    bins = np.linspace(-1, 1, 41)
    for ax, (backbone, variant) in zip(axes[0], keys):
        sel = data[(data.backbone == backbone) & (data.variant == variant)]
        steps = np.sort(sel.step.unique())
        thirds = [s for s in np.array_split(steps, min(3, len(steps))) if len(s)]
        for part, label in zip(thirds, ("early", "middle", "late")):
            values = sel[sel.step.isin(part)].cos.to_numpy()
            ax.hist(values, bins=bins, histtype="step", density=True, label=f"{label} (steps {part[0]}-{part[-1]})")
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{backbone} / {variant}")
        ax.set_xlabel("conflict cosine")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    paths = _savefig(fig, out, name)
    plt.close(fig)
    return paths


def figure_cosine_hist(results: Path, out: Path) -> list[Path]:
    data = _scores_frame(_pretrain_runs(results))
    return _plot_cosine_hist(data, out, "conflict_cosine_hist", "Per-sample conflict cosine over training (all seeds)") if len(data) else []


def run_conflict_histogram(run_dir: Path, backbone: str, variant: str, seed: int) -> Path | None:
    """``conflict_hist.png`` of one pre-training run (its MLflow artifact); None without score dumps."""
    import matplotlib

    matplotlib.use("Agg")
    data = _scores_frame([(backbone, variant, seed, Path(run_dir))])
    if not len(data):
        return None
    paths = _plot_cosine_hist(data, Path(run_dir), "conflict_hist", f"Per-sample conflict cosine, seed {seed}")
    return next(p for p in paths if p.suffix == ".png")


def figure_fractions(results: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    frames = []
    for backbone, variant, seed, d in _pretrain_runs(results):
        path = d / "train_log.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows:
                frames.append(pd.DataFrame(rows).assign(backbone=backbone, variant=variant, seed=seed))
    if not frames:
        return []
    data = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), squeeze=False)
    for ax, column, title in zip(axes[0], ("conflict_fraction", "kept_fraction"), ("conflicting fraction (cos < 0)", "kept fraction (curriculum)")):
        if column not in data:
            continue
        for (backbone, variant), group in sorted(data.groupby(["backbone", "variant"]), key=lambda kv: (kv[0][0], _variant_key(kv[0][1]))):
            per_step = group.groupby("step")[column].agg(["mean", "min", "max"])
            smooth = per_step["mean"].rolling(5, min_periods=1, center=True).mean()
            line = ax.plot(per_step.index, smooth, label=f"{backbone}/{variant}")[0]
            ax.fill_between(per_step.index, per_step["min"], per_step["max"], color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    axes[0][1].legend(fontsize=7)
    paths = _savefig(fig, out, "fractions")
    plt.close(fig)
    return paths


def figure_noise_roc(results: Path, out: Path, target: str = "either") -> list[Path]:
    """ROC curves of every indicator, one panel per (backbone, variant), first seed of each."""
    import matplotlib.pyplot as plt

    found: dict[tuple[str, str], Path] = {}
    for path in sorted((results / "eval" / "noise").glob("*/*/seed*/roc.csv"), key=lambda p: (p.parts[-4], _variant_key(p.parts[-3]), p.parts[-2])):
        found.setdefault((path.parts[-4], path.parts[-3]), path)
    if not found:
        return []
    fig, axes = plt.subplots(1, len(found), figsize=(3.2 * len(found), 3.2), squeeze=False, sharey=True)
    for ax, ((backbone, variant), path) in zip(axes[0], found.items()):
        roc = pd.read_csv(path)
        roc = roc[roc.target == target]
        for name, group in roc.groupby("indicator", sort=False):
            ax.plot(group.fpr, group.tpr, label=name, lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{backbone} / {variant} ({path.parts[-2]})")
        ax.set_xlabel("false positive rate")
    axes[0][0].set_ylabel(f"true positive rate (target: {target})")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    paths = _savefig(fig, out, "noise_roc")
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- entry point


def noise_rate_of(results: Path) -> float:
    """The injected noise rate of a results tree: mean of the audio and text rates its runs used."""
    for _, _, _, run in _pretrain_runs(results):
        path = run / "config.yaml"
        if path.is_file():
            import yaml

            noise = (yaml.safe_load(path.read_text()) or {}).get("data", {}).get("noise", {})
            return 0.5 * (float(noise.get("audio_rate", 0.0)) + float(noise.get("text_rate", 0.0)))
    raise DataError(f"{results}/pretrain: no run with a config.yaml to read the noise rate from")


def gain_vs_noise(roots: Sequence[Path]) -> pd.DataFrame:
    """Per results tree (one noise rate each), each variant's paired gain over the baseline on the
    headline downstream metrics: columns ``noise_rate, backbone, variant, task, mean, std, n``."""
    rows = []
    for root in roots:
        long, rate = collect(root), noise_rate_of(root)
        for backbone in sorted(long.backbone.unique()):
            for variant in sorted(set(long[long.backbone == backbone].variant) - {"baseline", "random"}, key=_variant_key):
                for task in ("kinetics", "audioset", "msrvtt"):
                    stats = _paired(long, backbone, HEADLINE[task], variant, "baseline")
                    if stats is not None:
                        rows.append({"noise_rate": rate, "backbone": backbone, "variant": variant, "task": task,
                                     "mean": stats[0], "std": stats[1], "n": stats[2]})
    return pd.DataFrame(rows, columns=["noise_rate", "backbone", "variant", "task", "mean", "std", "n"])


def figure_noise_gain(roots: Sequence[Path], out: Path, table_path: Path | None = None) -> list[Path]:
    """Downstream gain over the baseline vs injected noise rate (needs trees at >= 2 noise rates);
    its table goes to ``table_path`` (default ``out/noise_gain.csv``)."""
    import matplotlib.pyplot as plt

    table = gain_vs_noise(roots)
    if table["noise_rate"].nunique() < 2:
        return []
    tasks = ("kinetics", "audioset", "msrvtt")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4))
    for ax, task in zip(axes, tasks):
        for (backbone, variant), group in table[table.task == task].groupby(["backbone", "variant"]):
            group = group.sort_values("noise_rate")
            ax.errorbar(group["noise_rate"], group["mean"], yerr=group["std"], marker="o", capsize=3, label=f"{backbone}/{variant}")
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{HEADLINE[task].label}: gain over baseline")
        ax.set_xlabel("injected noise rate (mean of audio, text)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write_text(table_path or out / "noise_gain.csv", table.to_csv(index=False))
    paths = _savefig(fig, out, "noise_gain")
    plt.close(fig)
    return paths


def build_noise_gain(roots: Sequence[Path], out: Path) -> dict[str, list[Path]]:
    """The cross-tree part alone (config/ablation.yaml): ``tables/noise_gain.csv`` and the figure."""
    import matplotlib

    matplotlib.use("Agg")
    rates = [noise_rate_of(root) for root in roots]
    if len(set(rates)) < 2:
        raise DataError(f"--noise-gain: the trees hold {len(set(rates))} distinct noise rate(s) {sorted(set(rates))}; expected at least 2")
    table = out / "tables" / "noise_gain.csv"
    figures = figure_noise_gain(roots, out / "figures", table)
    return {"tables": [table], "figures": figures}


def build_report(results: str | Path, compare: Sequence[str | Path] = ()) -> dict[str, list[Path]]:
    """Write every table, figure and the summary under ``results``; returns the written paths by kind.

    ``compare``: results trees of the same grid at other noise rates, for the gain-vs-noise figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    results = Path(results)
    long = collect(results)
    tables, figures = results / "tables", results / "figures"
    written: dict[str, list[Path]] = {"tables": [], "figures": []}

    def text(path: Path, content: str) -> None:
        atomic_write_text(path, content)
        written["tables"].append(path)

    text(tables / "metrics_long.csv", long.to_csv(index=False))
    text(tables / "metrics_wide.csv", wide(long).to_csv(index=False))
    table = ablation(long)
    text(tables / "ablation.csv", table.to_csv(index=False, float_format="%.6g"))
    caption = "Ablation: mean ± std over seeds; best per column in bold (↓: lower is better)."
    text(tables / "ablation.md", f"{caption}\n\n" + to_markdown(formatted(table, ABLATION_COLUMNS, ("**", "**"))))
    text(tables / "ablation.tex", to_latex(formatted(table, ABLATION_COLUMNS, ("<<", ">>")), caption.replace("↓", "lower")))
    text(tables / "summary.md", summary(long))
    figures.mkdir(parents=True, exist_ok=True)
    for make in (figure_cosine_hist, figure_fractions, figure_noise_roc):
        paths = make(results, figures)
        if not paths:
            log.info("%s: no input for %s", results, make.__name__)
        written["figures"] += paths
    if compare:
        written["figures"] += figure_noise_gain([results, *map(Path, compare)], figures)
    return written

"""Noise detection over training across seeds: how well each per-sample indicator flags the
misaligned triplets at each stage of pre-training, per backbone, variant, corpus, target
(audio-misaligned, text-misaligned, either) and window of steps, AUROC and average precision as
mean ± std and the interval of the mean over seeds (:func:`cmgh.report.stats.interval`); two
indicators compared per window, paired by seed (:func:`indicator_difference`).

It reads each run's output of the ``noise_training`` evaluation
(``eval/noise_training/{backbone}/{variant}/seed{seed}/`` :data:`cmgh.layout.NOISE_WINDOWS`, one
job per pre-training run), not the score dumps: the windows are that step's
(``evaluate.noise_training.window``), so every seed of a variant is cut alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.errors import DataError
from cmgh.evaluate import NOISE_TRAINING
from cmgh.io import atomic_write_text
from cmgh.report import stats
from cmgh.report.collect import order_key, results_order
from cmgh.plots import savefig
from cmgh.report.tables import cell, to_markdown

log = logging.getLogger(__name__)

TASK = NOISE_TRAINING  # the evaluation whose per-run windows this aggregates
TARGET_NAMES = {"audio": "misaligned audio", "text": "misaligned text", "either": "misaligned audio or text"}
METRIC_NAMES = {"auroc": "AUROC (chance 0.5)", "ap": "average precision (chance: the misaligned share)"}
TARGET = {"both": "either", "text": "text", "audio": "audio"}  # the target of a noise modality's worlds (cmgh.worlds.MODALITIES)
CONFLICT = "cos_representation"  # the paper's conflict cosine (our reconstruction), exact at the video representation
MATCHED_LOSS = {"either": "loss_total", "text": "loss_vt", "audio": "loss_va"}  # the per-sample loss of the misaligned pair
KEYS = ["backbone", "variant", "dataset", "metric", "target", "step", "step_to"]  # a row: one corpus, metric, target and window of one variant
RUN_COLUMNS = ["dataset", "indicator", "target", "step", "step_to", "auroc", "ap", "n", "n_noisy"]  # a run's NOISE_WINDOWS
ROW = ["dataset", "indicator", "target", "step"]  # what names one of its rows
CAPTION = ("Noise detection over training: AUROC and average precision of each per-sample indicator for flagging misaligned "
           "triplets, per pre-training corpus with generated ground truth, target and window of training steps (each run's "
           f"`{TASK}` evaluation), mean ± std over seeds [{100 * stats.LEVEL:g} % interval of the mean: bootstrap, narrower "
           "than its level with few seeds; with 2 seeds Student's t]. `triplets`: scored per seed and window; `misaligned`: "
           "their share flagged by the target.")

Run = tuple[str, str, int, Path]  # backbone, variant, seed, the run's NOISE_WINDOWS


def run_outputs(results: Path, order: tuple[str, ...] | None = None) -> list[Run]:
    """Every run's windows table, by backbone, variant (in ``order``, default the tree's) and seed."""
    found = []
    for path in Path(results).glob(layout.eval_glob(TASK)):
        backbone, variant, seed = path.parts[-4], path.parts[-3], path.parts[-2].removeprefix("seed")
        if seed.isdigit():
            found.append((backbone, variant, int(seed), path.parent / layout.NOISE_WINDOWS))
    key = order_key(order if order is not None else results_order(results, {r[1] for r in found}))
    return sorted(found, key=lambda r: (r[0], key(r[1]), r[2]))


def _read_windows(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (written with the run's {layout.METRICS} by `cmgh evaluate --task {TASK}`)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a noise-over-training table ({type(exc).__name__})") from None
    missing = [c for c in RUN_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (expected {', '.join(RUN_COLUMNS)})")
    twice = table.duplicated(ROW, keep=False)
    if twice.any():
        first = table[twice].iloc[0]
        raise DataError(f"{path}: {', '.join(f'{c} {first[c]}' for c in ROW)} appears twice (expected one row per {', '.join(ROW)})")
    return table


def per_seed(results: Path, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per run, corpus, metric (``auroc``, ``ap``), target and window: :data:`KEYS`,
    ``seed``, ``n`` (triplets scored), ``n_noisy`` and each indicator's value; what the table
    aggregates and :func:`indicator_difference` pairs."""
    frames = []
    for backbone, variant, seed, path in run_outputs(results, order):
        table = _read_windows(path)
        if table.empty:
            log.info("%s: no window scored (the run's %s says why: params.skipped), left out of %s", path, layout.METRICS, layout.NOISE_TRAINING_TABLE)
            continue
        long = table.melt(id_vars=[c for c in RUN_COLUMNS if c not in ("auroc", "ap")], value_vars=["auroc", "ap"], var_name="metric")
        index = [c for c in KEYS if c not in ("backbone", "variant")] + ["n", "n_noisy"]
        wide = long.set_index([*index, "indicator"])["value"].unstack("indicator")[list(dict.fromkeys(table["indicator"]))]
        wide.columns.name = None
        frames.append(wide.reset_index().assign(backbone=backbone, variant=variant, seed=seed))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, "seed", "n", "n_noisy"])
    data = pd.concat(frames, ignore_index=True)
    return data[[*KEYS, "seed", "n", "n_noisy", *[c for c in data.columns if c not in (*KEYS, "seed", "n", "n_noisy")]]]


def indicator_difference(data: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Indicator ``a`` minus ``b`` (e.g. the conflict cosine against a per-sample loss) per row of
    :data:`KEYS`, paired by seed (``data``: :func:`per_seed`); columns :data:`KEYS`, ``mean,
    std, low, high, p, n, test``. Windows of one run share its model, so they are not pooled as
    replicates: the seeds are."""
    rows = []
    for key, group in data.groupby(KEYS, sort=False):
        by_seed = group.set_index("seed")
        c = stats.paired(by_seed[a], by_seed[b])
        if c is not None:
            rows.append({**dict(zip(KEYS, key, strict=True)), "mean": c.mean, "std": c.std, "low": c.low, "high": c.high,
                         "p": c.p, "n": c.n, "test": c.test})
    return pd.DataFrame(rows, columns=[*KEYS, "mean", "std", "low", "high", "p", "n", "test"])


def noise_over_training(results: Path, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per :data:`KEYS`: ``seeds``, mean ``triplets`` and ``misaligned`` share per seed, and per
    indicator ``<name> mean``, ``<name> std``, ``<name> low`` and ``<name> high`` over seeds (empty
    frame when no run has an output with windows)."""
    data = per_seed(results, order)
    return aggregate(data, order if order is not None else results_order(results, set(data["variant"])))


def aggregate(data: pd.DataFrame, order: tuple[str, ...]) -> pd.DataFrame:
    """:func:`noise_over_training` from :func:`per_seed`'s rows, variants in ``order``."""
    if data.empty:
        return pd.DataFrame(columns=[*KEYS, "seeds", "triplets", "misaligned"])
    key = order_key(order)
    indicators = [c for c in data.columns if c not in (*KEYS, "seed", "n", "n_noisy")]
    groups = data.assign(share=data["n_noisy"] / data["n"]).groupby(KEYS)
    out = groups.agg(seeds=("seed", "nunique"), triplets=("n", "mean"), misaligned=("share", "mean"))
    for name in indicators:
        out[f"{name} mean"] = groups[name].mean()
        out[f"{name} std"] = groups[name].std()
        ends = groups[name].apply(lambda v: stats.interval(v.dropna().to_numpy())[:2])
        out[f"{name} low"], out[f"{name} high"] = ends.str[0], ends.str[1]
    out = out.reset_index()
    rank = {v: i for i, v in enumerate(sorted(out["variant"].unique(), key=key))}
    metric = {m: i for i, m in enumerate(METRIC_NAMES)}
    target = {t: i for i, t in enumerate(TARGET_NAMES)}
    ranks = out.assign(_v=out["variant"].map(rank), _m=out["metric"].map(metric).fillna(len(metric)), _t=out["target"].map(target).fillna(len(target)))
    columns = ["backbone", "_v", "dataset", "_m", "_t", "step"]
    return ranks.sort_values(columns, kind="stable").drop(columns=["_v", "_m", "_t"]).reset_index(drop=True)


def indicators(table: pd.DataFrame) -> list[str]:
    """The indicators of a :func:`noise_over_training` table, in its column order."""
    return [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """The caption, then per backbone, variant and corpus a table per metric: one row per target and
    window, ``mean ± std [low, high]`` cells."""
    if table.empty:
        return f"{CAPTION}\n\nNo pre-training run with a `{TASK}` evaluation that scored a window was found.\n"
    names = indicators(table)
    parts = [CAPTION]
    for (backbone, variant, dataset), section in table.groupby(["backbone", "variant", "dataset"], sort=False):
        parts.append(f"## {backbone} · {variant} · {dataset}")
        for metric, rows in section.groupby("metric", sort=False):
            shown = pd.DataFrame({
                "target": rows["target"],
                "steps": [f"{a}-{b}" for a, b in zip(rows["step"], rows["step_to"], strict=True)],
                "seeds": rows["seeds"],
                "triplets": [f"{v:.0f}" for v in rows["triplets"]],
                "misaligned": [f"{v:.2f}" for v in rows["misaligned"]],
                **{name: [_cell(*map(float, values), digits) for values in zip(*(rows[f"{name} {q}"] for q in ("mean", "std", "low", "high")), strict=True)]
                   for name in names},
            })  # fmt: skip
            parts.append(f"{METRIC_NAMES.get(str(metric), str(metric))}:\n\n" + to_markdown(shown).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def _cell(mean: float, std: float, low: float, high: float, digits: int) -> str:
    text = cell(mean, std, digits)
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) and np.isfinite(high) else text


def figure(table: pd.DataFrame, results: Path, backbone: str, variant: str, metric: str = "auroc") -> list[Path]:
    """One variant's ``metric`` over training: a panel per corpus (rows) and target (columns), a
    line per indicator at each window's last step, its interval over seeds as a band. A variant
    whose runs scored no window still gets its file, saying so (the workflow declares one per variant)."""
    import matplotlib.pyplot as plt

    rows = table[(table["backbone"] == backbone) & (table["variant"] == variant) & (table["metric"] == metric)]
    corpora = list(dict.fromkeys(rows["dataset"])) or ["-"]
    targets = list(TARGET_NAMES)
    fig, axes = plt.subplots(len(corpora), len(targets), figsize=(3.6 * len(targets), 2.9 * len(corpora)), squeeze=False, sharex=True, sharey=True)
    for i, dataset in enumerate(corpora):
        for j, target in enumerate(targets):
            ax: Any = axes[i][j]
            panel = rows[(rows["dataset"] == dataset) & (rows["target"] == target)].sort_values("step_to")
            for name in indicators(table):
                if panel[f"{name} mean"].notna().any():
                    line = ax.plot(panel["step_to"], panel[f"{name} mean"], marker="o", ms=3, lw=1.2, label=name)[0]
                    ax.fill_between(panel["step_to"], panel[f"{name} low"], panel[f"{name} high"], color=line.get_color(), alpha=0.15, lw=0)
            if metric == "auroc":
                ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            if panel.empty:
                ax.text(0.5, 0.5, "no window scored", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_title(f"{dataset}: {TARGET_NAMES[target]}", fontsize=9)
            if i == len(corpora) - 1:
                ax.set_xlabel("training step (window's last)")
        axes[i][0].set_ylabel(metric.upper() if metric == "auroc" else "average precision")
    fig.suptitle(f"{backbone} / {variant}: noise detection over training (mean, {100 * stats.LEVEL:g} % interval over seeds)", y=1.02)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:  # below the panels: the bands leave no corner free
        fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=len(handles), bbox_to_anchor=(0.5, 0.0), frameon=False)
    target = layout.noise_training_figure(results, backbone, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = savefig(fig, target.parent, target.stem)
    plt.close(fig)
    return paths


def build(results: Path, order: tuple[str, ...]) -> dict[str, list[Path]]:
    """Write :data:`~cmgh.layout.NOISE_TRAINING_TABLE` (CSV and Markdown) and one figure per backbone
    and variant that has a ``noise_training`` output; returns the written paths by kind."""
    runs = run_outputs(results, order)
    data = per_seed(results, order)
    table = aggregate(data, order)
    written: dict[str, list[Path]] = {"tables": [], "figures": []}
    for suffix, text in (("csv", table.to_csv(index=False, float_format="%.6g")), ("md", markdown(table))):
        path = layout.noise_training_table(results, suffix)
        atomic_write_text(path, text)
        written["tables"].append(path)
    for backbone, variant in dict.fromkeys((r[0], r[1]) for r in runs):
        written["figures"] += figure(table, results, backbone, variant)
    return written

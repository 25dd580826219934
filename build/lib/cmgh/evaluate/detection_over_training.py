"""How well each per-sample indicator flags the misaligned triplets *during* training.

The trainer dumps, at configured steps, the per-sample scores of the batch it trained on: the
conflict cosine at its meeting point (``cos``), the cosine at the representation
(``cos_representation``) and both losses. These are exactly the signals a curriculum sees at that
moment. Joined with the generator's ground truth (each generated corpus's own
``noise_labels.csv``, which training reads only for the oracle control; the join of :mod:`cmgh.evaluate.noise_truth`),
they give AUROC and average precision per corpus, indicator, target and window of steps: the
paper's premise, tested on the narrative corpus (HowTo100M) and the non-narrative one (YouTube-8M) alike.

The evaluation task ``noise_training`` (:data:`cmgh.evaluate.RUN_TASKS`) does this for one
pre-training run: ``cmgh evaluate --task noise_training --checkpoint RUN`` writes
:data:`cmgh.layout.NOISE_WINDOWS` (one row per corpus, indicator, target and window) beside its
``metrics.json``, and each window's values go to MLflow at the window's last training step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.data.io.tables import read_parquet
from cmgh.errors import DataError
from cmgh.evaluate.embeddings import Timer
from cmgh.evaluate.metrics import average_precision, binary_auroc
from cmgh.evaluate import NOISE_TRAINING, TARGETS, TRAINING_INDICATORS
from cmgh.data.datasets.noise_labels import corpus_labels, labelled_corpora
from cmgh.evaluate.noise_truth import DUMP_COLUMNS, label_clips, loss_total
from cmgh.evaluate.registry import Series, register_run
from cmgh.io import atomic_write_text
from cmgh.layout import PathLike

log = logging.getLogger(__name__)

TASK = NOISE_TRAINING
WINDOWS = 5  # default: the run cut into this many windows (default_window)
COLUMNS = ["dataset", "indicator", "target", "step", "step_to", "auroc", "ap", "n", "n_noisy"]  # one row of NOISE_WINDOWS
METRICS = ("auroc", "ap")
# what a score dump must hold to give every indicator (the rest, e.g. ``kept``, is not read)
SCORED = ("step", "item_id", *DUMP_COLUMNS, "cos_representation", "loss_va", "loss_vt")
JOINED = ("dataset", "clip_start", "clip_end")  # ... and to be matched with a corpus's ground truth
NUMERIC = ("step", *DUMP_COLUMNS, "cos_representation", "loss_va", "loss_vt", "clip_start", "clip_end")


def default_window(cfg: Mapping[str, Any]) -> int:
    """Steps per window: the run cut into :data:`WINDOWS`, rounded up to a multiple of the dump
    interval, so each window holds as many dumps.

    One epoch per window was the other candidate; it is 3 steps at the default config (192 clips,
    batch 64: 50 windows of 192 triplets, too noisy to read) and never completes at paper scale (one
    dumped batch every 10 000 steps), while five windows read early -> late at any scale (default
    config: 30 steps, 1 920 scored triplets, each clip scored about ten times).
    """
    pretrain = cfg.get("pretrain", {})
    steps, every = int(pretrain.get("steps", 1)), max(1, int(pretrain.get("score_every", 1)))
    return every * max(1, math.ceil(steps / (WINDOWS * every)))


def window_size(cfg: Config) -> int:
    """``evaluate.noise_training.window``, else :func:`default_window` of the run's pretrain section."""
    window = cfg.evaluate.noise_training.window
    return int(window) if window is not None else default_window(cfg.to_dict())


def run_vt_weight(run_dir: PathLike) -> float:
    """The ``pretrain.vt_weight`` a run trained with (its config.yaml beside the score dumps)."""
    path = Path(run_dir) / layout.CONFIG
    if not path.is_file():
        raise DataError(f"{path}: the run's config is missing (needed for its pretrain.vt_weight)")
    return float(config_mod.load(path).pretrain.vt_weight)


def _read_dump(path: Path, need: Sequence[str]) -> pd.DataFrame:
    """One score dump, checked: every column of ``need`` present, the numeric ones all numbers."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a score dump ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (expected a score dump of cmgh pretrain: {', '.join(need)})")
    for column in (c for c in NUMERIC if c in need):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {column}, row {row + 1}: {table[column].iloc[row]!r} is not a finite number")
        table[column] = values
    return table


def read_scores(run_dir: PathLike, vt_weight: float | None = None, need: Sequence[str] = SCORED) -> pd.DataFrame:
    """Every score dump of a run, indicators named as in :data:`~cmgh.evaluate.TRAINING_INDICATORS`; ``loss_total`` with the
    run's own ``vt_weight`` unless one is given. A dump lacking a column of ``need``, or holding a
    non-number in one, is a one-line DataError naming the file."""
    files = layout.score_files(run_dir)
    if not files:
        raise DataError(f"{Path(run_dir) / layout.SCORES_DIR}: no score dumps (set pretrain.score_every)")
    weight = run_vt_weight(run_dir) if vt_weight is None else float(vt_weight)
    scores = pd.concat([_read_dump(f, need) for f in files], ignore_index=True).rename(columns=DUMP_COLUMNS)
    scores["loss_total"] = loss_total(scores["loss_va"], scores["loss_vt"], weight)
    return scores


def over_training(run_dir: Path, data_root: Path, features_root: Path, window: int, vt_weight: float | None = None,
                  fmt: str = "decoded", datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """AUROC and average precision of every indicator for every target, per corpus and
    consecutive windows of ``window`` steps: one row of :data:`COLUMNS` each (``step``, ``step_to``:
    the window's first and last training step; ``n`` triplets scored in it, ``n_noisy`` of them
    misaligned for the target; AUROC NaN unless both kinds are there, AP NaN without a misaligned one).

    The corpora are those of ``datasets`` that were dumped (no rows when none was; default: every
    dumped corpus with a ground truth, :func:`~cmgh.data.datasets.noise_labels.labelled_corpora`, a
    one-line DataError when there is none), each scored against its own
    ``noise_labels.csv``; rows of other corpora (AudioSet) are left out. Each dumped row is
    labelled by its own window (``clip_start``, ``clip_end``: streamed clips draw a new window
    every epoch); the corpus index of ``fmt`` (``features.format``) gives its video. A window of
    one epoch's worth of steps covers each triplet once, scored by the model of that moment.
    A YouTube-8M video without captions counts as text-aligned (its ground truth says so; its
    conflict cosine and video-text loss are 0). The last window ends at the last dumped step (a
    finished run always dumps its last step).
    """
    scores = read_scores(run_dir, vt_weight, need=(*SCORED, *JOINED))
    dumped = sorted(set(scores["dataset"].astype(str)))
    names = labelled_corpora(data_root, dumped) if datasets is None else [name for name in datasets if name in dumped]
    if not names and datasets is None:
        raise DataError(f"{run_dir}: none of the scored corpora ({', '.join(dumped)}) has a ground truth ({layout.NOISE_LABELS})")
    last = int(scores["step"].max())
    tables = [_corpus_rows(scores[scores["dataset"] == name].reset_index(drop=True), name, data_root, features_root, window, fmt, last)
              for name in names]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)


def _corpus_rows(scores: pd.DataFrame, dataset: str, data_root: Path, features_root: Path, window: int, fmt: str, last: int) -> pd.DataFrame:
    index_path = layout.corpus_dir(features_root, dataset, fmt) / layout.FEATURE_INDEX
    if not index_path.is_file():
        raise DataError(f"{index_path}: the {dataset} corpus index is missing (needed to join its scores with {layout.NOISE_LABELS})")
    index = read_parquet(index_path, f"{dataset} corpus index", columns=["item_id", "video_id"])
    rows = scores.assign(row=np.arange(len(scores))).merge(index, on="item_id")
    clips = rows[["row", "video_id", "clip_start", "clip_end"]].rename(columns={"row": "item_id"})
    truth = label_clips(clips, corpus_labels(data_root, dataset)).rename(columns={"item_id": "row"})
    scores = rows.drop(columns=["video_id"]).merge(truth, on="row")
    scores["window"] = scores["step"] // window * window
    out = []
    for start, group in scores.groupby("window"):
        for target in TARGETS:
            labels = group[target].to_numpy()
            noisy = int(labels.sum())
            for name, sign in TRAINING_INDICATORS.items():
                values = sign * group[name].to_numpy(dtype=float)
                out.append({
                    "dataset": dataset, "indicator": name, "target": target, "step": int(start), "step_to": min(int(start) + window - 1, last),
                    "auroc": binary_auroc(values, labels) if 0 < noisy < len(labels) else math.nan,
                    "ap": average_precision(values, labels) if noisy else math.nan,
                    "n": len(labels), "n_noisy": noisy,
                })  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS)


def metric_name(dataset: str, metric: str, indicator: str, target: str) -> str:
    """A window's value as metrics.json and MLflow name it (``howto100m/auroc/loss_va/either``):
    MLflow-legal as it is (letters, digits, ``_`` and ``/``)."""
    return f"{dataset}/{metric}/{indicator}/{target}"


def series(table: pd.DataFrame) -> Series:
    """:data:`COLUMNS` rows as metrics per training step, each window's AUROC and AP at its last
    step (``step_to``), so a tracker draws them over training; undefined values (NaN) left out."""
    out: Series = {}
    for row in table.itertuples(index=False):
        for metric in METRICS:
            value = float(getattr(row, metric))
            if math.isfinite(value):
                out.setdefault(int(row.step_to), {})[metric_name(row.dataset, metric, row.indicator, row.target)] = value
    return dict(sorted(out.items()))


def final(steps: Series) -> dict[str, float]:
    """Each metric's value at its last step: the detection at the end of training (what a tracked
    run shows as the metric's latest value, so metrics.json and the store agree)."""
    out: dict[str, float] = {}
    for values in steps.values():  # in step order: later windows overwrite earlier ones
        out.update(values)
    return out


def skip_reason(cfg: Config, run_dir: Path) -> tuple[list[str], str | None]:
    """The run's corpora with a ground truth, and why the run cannot be scored (None when it can):
    no score dumps, or no corpus with a generated ``noise_labels.csv``."""
    if not layout.score_files(run_dir):
        return [], f"no score dumps in {Path(run_dir) / layout.SCORES_DIR} (pretrain.score_every)"
    trained = [name for name, _ in config_mod.corpora(cfg.to_dict()["pretrain"])]
    labelled = labelled_corpora(cfg.path("data"), trained)
    if not labelled:
        return [], f"none of its corpora ({', '.join(trained)}) has a ground truth ({layout.NOISE_LABELS} under {cfg.path('data')})"
    return labelled, None


@register_run(TASK)
def run(cfg: Config, run_dir: Path, out: Path, timer: Timer) -> tuple[dict[str, float], dict[str, Any], Series]:
    """Noise detection over one run's training; a run that cannot be scored (:func:`skip_reason`)
    writes an empty table and says why in ``params.skipped``."""
    window = window_size(cfg)
    corpora, reason = skip_reason(cfg, run_dir)
    params: dict[str, Any] = {
        "window": window, "corpora": corpora, "targets": list(TARGETS),
        "indicators": {k: ("-value" if v < 0 else "+value") for k, v in TRAINING_INDICATORS.items()},
    }  # fmt: skip
    table = pd.DataFrame(columns=COLUMNS)
    if reason is None:
        with timer.phase("metrics"):  # the run's corpora are stored as features.format says (cmgh.config.corpus_format)
            table = over_training(run_dir, cfg.path("data"), cfg.path("features"), window, float(cfg.pretrain.vt_weight),
                                  str(cfg.features.format), corpora)
        if table.empty:
            reason = f"its score dumps hold no triplet of {', '.join(corpora)}"
    if reason is not None:
        log.warning("%s: noise detection over training skipped: %s", run_dir, reason)
        params["skipped"] = reason
    atomic_write_text(out / layout.NOISE_WINDOWS, table.to_csv(index=False))
    steps = series(table)
    params["windows"] = int(table[["step"]].drop_duplicates().shape[0])
    params["n_scored"] = int(table.drop_duplicates(["dataset", "step"])["n"].sum()) if len(table) else 0
    return final(steps), params, steps

"""What a study's values are compared with: the baseline trial, the random-init floor and the
validation split's resolution, and the verdict on whether the best trial is a ``tuned`` variant.

* **Resolution**: one clip's share of the validation split (:func:`cmgh.sweep.validation.resolution`),
  the step of a top-1 accuracy; two trials closer than that may differ by a single clip.
* **Baseline**: ``sweep.base_variant`` with its own values, run as an ordinary trial of the study's
  budget (queued when the study has none: a new study's first trial; user attribute
  ``reference: baseline``), so the same training, seeds and evaluation score it and the sampler
  learns from it. A base value a categorical parameter cannot take leaves the study without a
  baseline (said in the verdict).
* **Random-init floor**: the validation metric of the baseline trial's model at its initial
  weights (each seed's), evaluated once per study into ``trial{N}/[seed{S}/]eval/random_init/``
  and cached as the study's user attribute ``random_init``.
* **Verdict**: the best trial is ``tuned`` only if it beats the baseline by more than the
  resolution; otherwise one line says why, and no tuned variant is written.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cmgh import config as config_mod
from cmgh import keypaths, layout
from cmgh.config import Config
from cmgh.sweep.space import search_space
from cmgh.sweep.validation import validation_value

log = logging.getLogger(__name__)

REFERENCE = "reference"  # trial user attr: "baseline" on the trial at the base variant's own values
BASELINE = "baseline"
CLIPS = "validation_clips"  # trial and study user attr: clips in the validation split (the evaluation's n_val)
RESOLUTION = "validation_resolution"  # trial and study user attr: :func:`resolution` of those clips
RANDOM_INIT = "random_init"  # study user attr: the floor (mean over the seeds); also the evaluation folder's name
def baseline_params(cfg: Config) -> tuple[dict[str, Any] | None, str]:
    """The base variant's own value of every key of the space (the baseline trial's parameters), or
    None and why not: Optuna cannot give a categorical parameter a value outside its choices."""
    tree = config_mod.for_variant(cfg, str(cfg.sweep.base_variant)).to_dict()
    params: dict[str, Any] = {}
    for key, dist in search_space(cfg).items():
        value = keypaths.get_path(tree, key)
        if dist["type"] == "categorical" and value not in dist["choices"]:
            return None, (f"sweep.space.{key}: the base variant's value {value!r} is not one of its choices, so no trial can "
                          "be the baseline (add it to the choices)")
        if dist["type"] != "categorical" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                              or (dist.get("log") and value <= 0)):
            return None, f"sweep.space.{key}: the base variant's value {value!r} cannot be sampled from this distribution"
        params[key] = value
    return params, ""


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's baseline trial: the first completed one, else the latest (failed, pruned, running, waiting)."""
    marked = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REFERENCE) == BASELINE]
    complete = [t for t in marked if t.state == TrialState.COMPLETE]
    return complete[0] if complete else (marked[-1] if marked else None)


def enqueue_baseline(cfg: Config, study: optuna.Study) -> None:
    """Queue the baseline trial unless the study has one (a warning when the space cannot hold it)."""
    if baseline_trial(study) is not None:
        return
    params, why = baseline_params(cfg)
    if params is None:
        log.warning("study %s: no baseline trial: %s", study.study_name, why)
        return
    study.enqueue_trial(params, user_attrs={REFERENCE: BASELINE})


def record_resolution(study: optuna.Study, trial: FrozenTrial) -> None:
    """The study's resolution from the first finished trial that measured its split."""
    if RESOLUTION not in study.user_attrs and RESOLUTION in trial.user_attrs:
        study.set_user_attr(CLIPS, int(trial.user_attrs[CLIPS]))
        study.set_user_attr(RESOLUTION, float(trial.user_attrs[RESOLUTION]))


def refresh(cfg: Config, study: optuna.Study) -> None:
    """Fill in the study's references as soon as its trials allow: the resolution, then the floor."""
    if RESOLUTION not in study.user_attrs:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            record_resolution(study, trial)
    ensure_random_init(cfg, study)


def random_init_value(cfg: Config, run_dir: Path, out: Path) -> float | None:
    """The objective of ``run_dir``'s model at its initial weights (None without a checkpoint there)."""
    if not run_dir.is_dir() or not any(run_dir.glob("*.pt")):
        return None
    return validation_value(cfg, run_dir, out, random_init=True)


def ensure_random_init(cfg: Config, study: optuna.Study) -> float | None:
    """The floor, evaluated once per study from the baseline trial's checkpoints (each seed's), then
    cached as the study's user attribute; None until the baseline trial has a checkpoint."""
    if RANDOM_INIT in study.user_attrs:
        return float(study.user_attrs[RANDOM_INIT])
    trial = baseline_trial(study)
    if trial is None or trial.state in (TrialState.WAITING, TrialState.RUNNING):
        return None
    number = trial.system_attrs.get("failed_trial", trial.number)  # a retried trial trains in the dead one's folder
    seeds = [int(s) for s in cfg.sweep.seeds]
    results, name, values = cfg.path("results"), study.study_name, []
    for seed in seeds:
        where = None if len(seeds) == 1 else seed
        value = random_init_value(cfg, layout.trial_pretrain_dir(results, name, number, where),
                                  layout.trial_seed_dir(results, name, number, where) / "eval" / RANDOM_INIT)
        if value is None:
            return None
        values.append(value)
    floor = statistics.fmean(values)
    study.set_user_attr(RANDOM_INIT, floor)
    log.info("study %s: random init (trial %d's model at its initial weights): %s %.4g", name, trial.number, study.user_attrs.get("objective"), floor)
    return floor


@dataclass(frozen=True)
class Verdict:
    """The best trial against the references, and the one line that says so."""

    tuned: bool
    line: str
    best_trial: int
    best: float
    baseline_trial: int | None
    baseline: float | None
    random_init: float | None
    resolution: float | None
    clips: int | None

    def record(self) -> dict[str, Any]:
        """What best_params.yaml holds of it."""
        return {"tuned": self.tuned, "verdict": self.line,
                "baseline": None if self.baseline_trial is None else {"trial": self.baseline_trial, "value": self.baseline},
                RANDOM_INIT: self.random_init, CLIPS: self.clips, RESOLUTION: self.resolution}


def _num(value: float | None) -> str:
    return "unknown" if value is None or not math.isfinite(value) else f"{value:.4g}"


def verdict(study: optuna.Study, no_baseline: str = "") -> Verdict:
    """Whether the best trial beats the baseline trial by more than the validation resolution
    (``no_baseline``: why the study has no baseline trial, when it has none)."""
    best = study.best_trial
    objective = str(study.user_attrs.get("objective", "value"))
    base = baseline_trial(study)
    floor = study.user_attrs.get(RANDOM_INIT)
    res = study.user_attrs.get(RESOLUTION)
    clips = study.user_attrs.get(CLIPS)
    baseline = float(base.value) if base is not None and base.state == TrialState.COMPLETE and base.value is not None else None
    head = (f"best trial {best.number}: {objective} {_num(best.value)}, baseline {_num(baseline)}"
            + (f" (trial {base.number})" if base is not None else "") + f", random init {_num(floor)}")
    tuned, why = False, ""
    if base is None:
        why = f"no baseline trial ({no_baseline or 'none in the study'})"
    elif baseline is None and base.state == TrialState.WAITING:  # queued behind other trials, or a study from before baselines
        why = f"the baseline trial {base.number} is queued, not run yet (raise the study's n_trials to run it)"
    elif baseline is None:
        why = f"the baseline trial {base.number} is {base.state.name.lower()}, not complete"
    elif res is None:
        why = "the validation split's size is unknown (no trial recorded it), so is its resolution"
    elif best.number == base.number:
        why = f"the best trial is the baseline (validation resolution {_num(res)})"
    else:
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        margin = sign * (float(best.value) - baseline)
        tuned = margin > float(res) * (1 + 1e-9)  # exactly one clip better is not more than the resolution, whatever the rounding
        relation = "beyond" if tuned else "within"
        why = f"{margin:.4g} better than the baseline, {relation} the validation resolution {_num(res)} ({clips} clips)"
    line = f"{head}: {why}; {'tuned variant written' if tuned else 'no tuned variant written'}"
    return Verdict(tuned, line, best.number, float(best.value), base.number if base is not None else None, baseline,
                   None if floor is None else float(floor), None if res is None else float(res), None if clips is None else int(clips))


def study_verdict(cfg: Config, study: optuna.Study) -> Verdict:
    """:func:`verdict`, with the reason a study of this config has no baseline trial when it has none."""
    return verdict(study, baseline_params(cfg)[1] if baseline_trial(study) is None else "")

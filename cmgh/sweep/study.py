"""Running a study: trials until the budget is met, then its outputs and the MLflow parent run."""

from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.errors import ConfigError
from cmgh.evaluate import VALIDATION_METRICS
from cmgh.sweep.objective import Objective
from cmgh.sweep.outputs import check_study_dir, record_study_dir, write_outputs
from cmgh.sweep.reference import (
    BASELINE, CLIPS, RANDOM_INIT, REFERENCE, RESOLUTION, baseline_trial, enqueue_baseline, refresh, study_verdict,
)
from cmgh.sweep.space import base_variant, search_space
from cmgh.sweep.storage import SweepError, create_or_load, finished_trials, redacted, storage_url, study_name

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".yaml", ".png")  # files of the study folder logged to its MLflow run


def run_study(cfg: Config, study: str | None = None, n_trials: int | None = None, *, worker_trials: int | None = None) -> optuna.Study:
    """Run (or continue) a study; writes trials.csv, best_params.yaml, tuned_variant.yaml and plots.

    ``n_trials`` (default ``sweep.n_trials``) is the number of finished trials the study should
    hold; ``worker_trials`` instead runs exactly that many finished trials in this process. Everything
    a user can get wrong (budget, name, space, a folder of another storage, an unwritable storage) is
    refused before the first trial; the folder is written only once the study is open.
    """
    from cmgh.track import open_tracker

    for what, value in (("n_trials", n_trials), ("worker_trials", worker_trials)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{what}: {value} is below 1 (expected at least one finished trial; --{what.replace('_', '-')})")
    if study:
        cfg = config_mod.with_overrides(cfg, [f"sweep.study={study}"])
    name = study_name(cfg)
    if str(cfg.sweep.objective) not in VALIDATION_METRICS:
        raise ConfigError(f"sweep.objective: {cfg.sweep.objective!r} is not one of {', '.join(VALIDATION_METRICS)}")
    search_space(cfg)
    base_variant(cfg)
    target = int(n_trials if n_trials is not None else cfg.sweep.n_trials)
    check_study_dir(cfg, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st, created = create_or_load(cfg, name, worker=worker_trials is not None)
    record_study_dir(cfg, name)
    st.set_user_attr("objective", str(cfg.sweep.objective))
    st.set_user_attr("base_variant", str(cfg.sweep.base_variant))
    # the trial at the base variant's own values: queued by the study's creator (one of several workers
    # started together), or by a lone process finding none (a study opened elsewhere, or made before baselines)
    if created or worker_trials is None:
        enqueue_baseline(cfg, st)
    objective = Objective(cfg, name)
    tags = {"study": name, "storage": redacted(storage_url(cfg)), "objective": cfg.sweep.objective}
    with open_tracker(cfg, layout.study_key(name), tags, stage="sweep", out=layout.study_dir(cfg.path("results"), name)) as parent:
        failures = mine = 0
        while True:
            remaining = (worker_trials - mine) if worker_trials is not None else target - finished_trials(st)
            if remaining <= 0:
                break
            done: list[FrozenTrial] = []
            st.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[lambda _s, t, done=done: done.append(t)], gc_after_trial=True)
            trial = done[-1]
            if trial.state == TrialState.FAIL:
                failures += 1
                reason = str(trial.user_attrs.get("fail_reason", "")).strip().splitlines()
                log.warning("study %s: trial %d failed (%s)", name, trial.number, reason[-1] if reason else "see the log")
                if failures > int(cfg.sweep.max_failures):
                    raise SweepError(f"study {name}: {failures} failed trials in this worker (sweep.max_failures={cfg.sweep.max_failures}); last: {reason[-1] if reason else '?'}")
            else:
                mine += 1
                refresh(cfg, st)
                log.info("%s", trial_line(st, trial))
        refresh(cfg, st)
        out = write_outputs(cfg, st)
        complete = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            judged, metric = study_verdict(cfg, st), str(cfg.sweep.objective)
            known = {f"baseline/{metric}": judged.baseline, f"{RANDOM_INIT}/{metric}": judged.random_init, RESOLUTION: judged.resolution}
            parent.log_metrics({f"best/{metric}": float(st.best_value), "trials_finished": float(finished_trials(st)),
                                **{k: v for k, v in known.items() if v is not None}})
            parent.set_tags({"best_trial": str(st.best_trial.number), "tuned": str(judged.tuned).lower(), "verdict": judged.line})
        for path in sorted(out.glob("*.*")):
            if path.suffix in OUTPUT_SUFFIXES:
                parent.log_artifact(path)
    return st


def trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """``study s: trial 3 complete, kinetics_val_top1 66.67 (best 70.83, trial 1; baseline 66.67, trial 0;
    random init 62.5; resolution 1.042, 96 clips); 4 finished`` (the references once known)."""
    objective = study.user_attrs.get("objective", "value")
    value = "pruned" if trial.state == TrialState.PRUNED else f"{trial.value:.4g}" if trial.value is not None else "no value"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    notes = [f"best {study.best_value:.4g}, trial {study.best_trial.number}"] if complete else []
    base = baseline_trial(study)
    if base is not None and base.state == TrialState.COMPLETE and base.value is not None:
        notes.append(f"baseline {base.value:.4g}, trial {base.number}")
    if RANDOM_INIT in study.user_attrs:
        notes.append(f"random init {float(study.user_attrs[RANDOM_INIT]):.4g}")
    if RESOLUTION in study.user_attrs:
        notes.append(f"resolution {float(study.user_attrs[RESOLUTION]):.4g}, {study.user_attrs.get(CLIPS)} clips")
    role = f" ({BASELINE})" if trial.user_attrs.get(REFERENCE) == BASELINE else ""
    noted = f" ({'; '.join(notes)})" if notes else ""
    return f"study {study.study_name}: trial {trial.number}{role} {trial.state.name.lower()}, {objective} {value}{noted}; {finished_trials(study)} finished"

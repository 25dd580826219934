"""One trial: pre-train the base variant with the sampled values, score it on a validation split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.evaluate import VALIDATION_METRICS
from cmgh.sweep.space import search_space, suggest, trial_config
from cmgh.sweep.storage import SweepError, study_name


def validation_value(cfg: Config, run_dir: Path, eval_dir: Path) -> float:
    """The objective on the validation split for the checkpoint in ``run_dir`` (RNG state untouched)."""
    from cmgh import checkpoint as ckpt
    from cmgh.evaluate.run import evaluate

    task, key = VALIDATION_METRICS[str(cfg.sweep.objective)]
    rng = ckpt.rng_state()  # the evaluation seeds torch; the trial's training must not notice
    try:
        result = evaluate(cfg, task, run_dir, eval_dir)
    finally:
        ckpt.set_rng_state(rng)
    value = result.get(key)
    if value is None or not math.isfinite(float(value)):
        raise SweepError(f"{eval_dir}: {task} {key} is not a finite number ({value!r})")
    return float(value)


class Objective:
    """``trial -> validation value``: pre-train with the sampled values, evaluate on validation."""

    def __init__(self, cfg: Config, name: str) -> None:
        self.cfg = cfg
        self.study_name = study_name(cfg, name)
        self.space = search_space(cfg)
        self.results = cfg.path("results")

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded on the trial (trials.csv, dashboard), then FAIL
            message = str(exc).strip().splitlines()
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {message[0][:500] if message else ''}")
            raise

    def _run(self, trial: optuna.Trial) -> float:
        from cmgh.track import open_tracker
        from cmgh.train.loop import RunSpec, pretrain

        cfg, study = self.cfg, self.study_name
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        retried = frozen.system_attrs.get("failed_trial")  # RetryHeartbeatStaleTrialCallback's mark
        number = retried if retried is not None else trial.number  # a retry resumes the dead trial's run
        name = layout.trial_name(number)
        params = suggest(trial, self.space)
        trial.set_user_attr("folder", str(layout.trial_dir(self.results, study, number)))
        tcfg = trial_config(cfg, params, name)
        run_cfg = config_mod.for_variant(tcfg, name)
        steps, every = int(cfg.sweep.steps), int(cfg.sweep.report_every)
        metric = f"sweep/{cfg.sweep.objective}"
        run_dir = layout.trial_pretrain_dir(self.results, study, number)
        tags = {"study": study, "trial": trial.number, "backbone": cfg.sweep.backbone, "variant": name,
                "base_variant": cfg.sweep.base_variant, "objective": cfg.sweep.objective}
        with open_tracker(run_cfg, layout.trial_key(study, number), tags, nested_under=layout.study_dir(self.results, study), stage="sweep_trial",
                          out=layout.trial_dir(self.results, study, number)) as tracker:
            tracker.log_params({f"optuna.{k}": v for k, v in params.items()})

            def on_step(done: int, model: Any) -> None:
                if done % every or done >= steps:
                    return
                value = validation_value(tcfg, run_dir, layout.trial_eval_dir(self.results, study, number, done))
                trial.report(value, done)
                tracker.log_metrics({metric: value}, step=done)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"trial {trial.number} pruned at step {done} ({cfg.sweep.objective}={value:.4g})")

            try:
                pretrain(tcfg, RunSpec(str(cfg.sweep.backbone), name, int(cfg.sweep.trial_seed), run_dir), tracker=tracker, on_step=on_step)
            except optuna.TrialPruned:
                tracker.close("KILLED")  # stopped on purpose, not failed
                raise
            value = validation_value(tcfg, run_dir, layout.trial_eval_dir(self.results, study, number, steps))
            tracker.log_metrics({metric: value}, step=steps)
            return value

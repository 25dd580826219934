"""One trial: pre-train the base variant with the sampled values, score it on a validation split."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

import optuna

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.sweep.reference import BASELINE, CLIPS, REFERENCE, RESOLUTION
from cmgh.sweep.seeds import SeedTracker, seed_order, seed_prefix
from cmgh.sweep.space import search_space, suggest, trial_config
from cmgh.sweep import workers
from cmgh.sweep.storage import study_name
from cmgh.sweep.validation import evaluation_clips, resolution, validation_value
from cmgh.tracking import Tracker

log = logging.getLogger(__name__)


class Objective:
    """``trial -> validation value``: pre-train with the sampled values on each of ``sweep.seeds``,
    evaluate on validation; the value is the mean over the seeds."""

    def __init__(self, cfg: Config, name: str) -> None:
        self.cfg = cfg
        self.study_name = study_name(cfg, name)
        self.space = search_space(cfg)
        self.results = cfg.path("results")
        self.metric = f"sweep/{cfg.sweep.objective}"  # the trial's value in its MLflow run (per seed: under seed_<S>/)

    def __call__(self, trial: optuna.Trial) -> float:
        workers.mark(trial)  # whose trial it is, should this process die (cmgh.sweep.workers)
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

        cfg, study = self.cfg, self.study_name
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        retried = frozen.system_attrs.get("failed_trial")  # RetryHeartbeatStaleTrialCallback's mark
        number = retried if retried is not None else trial.number  # a retry resumes the dead trial's run
        name = layout.trial_name(number)
        params = suggest(trial, self.space)
        trial.set_user_attr("folder", str(layout.trial_dir(self.results, study, number)))
        tcfg = trial_config(cfg, params, name)
        run_cfg = config_mod.for_variant(tcfg, name)
        seeds = [int(s) for s in cfg.sweep.seeds]
        tags = {"study": study, "trial": trial.number, "backbone": cfg.sweep.backbone, "variant": name,
                "base_variant": cfg.sweep.base_variant, "objective": cfg.sweep.objective, "seeds": ",".join(map(str, seeds))}
        if trial.user_attrs.get(REFERENCE) == BASELINE:
            tags[REFERENCE] = BASELINE
        with open_tracker(run_cfg, layout.trial_key(study, number), tags, nested_under=layout.study_dir(self.results, study), stage="sweep_trial",
                          out=layout.trial_dir(self.results, study, number)) as tracker:
            tracker.log_params({f"optuna.{k}": v for k, v in params.items()})
            if len(seeds) == 1:
                return self._one_seed(trial, tcfg, tracker, number, seeds[0])
            return self._seeds(trial, tcfg, tracker, number, seed_order(seeds, int(cfg.sweep.seed), trial.number))

    def _measured(self, trial: optuna.Trial, eval_dir: Path) -> None:
        """The validation split's size and resolution as the trial's evaluation saw them (trials.csv, dashboard)."""
        clips = evaluation_clips(eval_dir)
        if clips is not None and CLIPS not in trial.user_attrs:
            trial.set_user_attr(CLIPS, clips)
            trial.set_user_attr(RESOLUTION, resolution(str(self.cfg.sweep.objective), clips))

    def _one_seed(self, trial: optuna.Trial, tcfg: Config, tracker: Tracker, number: int, seed: int) -> float:
        """One seed: its validation values every ``report_every`` steps go to the pruner (steps as steps)."""
        from cmgh.train.loop import RunSpec, pretrain

        cfg, study, name = self.cfg, self.study_name, layout.trial_name(number)
        steps, every, metric = int(cfg.sweep.steps), int(cfg.sweep.report_every), self.metric
        run_dir = layout.trial_pretrain_dir(self.results, study, number)

        def on_step(done: int, model: Any) -> None:
            if done % every or done >= steps:
                return
            value = validation_value(tcfg, run_dir, layout.trial_eval_dir(self.results, study, number, done))
            trial.report(value, done)
            tracker.log_metrics({metric: value}, step=done)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned at step {done} ({cfg.sweep.objective}={value:.4g})")

        try:
            pretrain(tcfg, RunSpec(str(cfg.sweep.backbone), name, seed, run_dir), tracker=tracker, on_step=on_step)
        except optuna.TrialPruned:
            tracker.close("KILLED")  # stopped on purpose, not failed
            raise
        final = layout.trial_eval_dir(self.results, study, number, steps)
        value = validation_value(tcfg, run_dir, final)
        self._measured(trial, final)
        trial.set_user_attr(f"value_seed{seed}", value)
        tracker.log_metrics({metric: value}, step=steps)
        return value

    def _seeds(self, trial: optuna.Trial, tcfg: Config, tracker: Tracker, number: int, order: list[int]) -> float:
        """Several seeds, each trained to the end and scored once: its value goes to the pruner with the
        seed as the instance id (``step``), as WilcoxonPruner pairs instances across trials. A pruned
        trial returns the mean of the seeds it ran (Optuna's advice: the sampler then learns from it)."""
        from cmgh.train.loop import RunSpec, pretrain

        cfg, study, name = self.cfg, self.study_name, layout.trial_name(number)
        steps, metric = int(cfg.sweep.steps), self.metric
        values: list[float] = []
        for seed in order:
            run_dir = layout.trial_pretrain_dir(self.results, study, number, seed)
            pretrain(tcfg, RunSpec(str(cfg.sweep.backbone), name, seed, run_dir), tracker=SeedTracker(tracker, seed))
            final = layout.trial_eval_dir(self.results, study, number, steps, seed)
            value = validation_value(tcfg, run_dir, final)
            self._measured(trial, final)
            values.append(value)
            trial.report(value, seed)
            trial.set_user_attr(f"value_seed{seed}", value)
            tracker.log_metrics({f"{seed_prefix(seed)}{metric}": value}, step=steps)
            if len(values) < len(order) and trial.should_prune():
                mean = statistics.fmean(values)
                note = f"{cfg.sweep.pruner} after {len(values)} of {len(order)} seeds"
                trial.set_user_attr("pruned", note)
                tracker.log_metrics({metric: mean}, step=steps)
                tracker.set_tags({"pruned": note})
                tracker.close("KILLED")  # stopped on purpose, not failed
                log.info("trial %d pruned (%s): %s=%.4g", trial.number, note, cfg.sweep.objective, mean)
                return mean
        mean = statistics.fmean(values)
        tracker.log_metrics({metric: mean}, step=steps)
        return mean

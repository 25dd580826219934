"""Optuna studies over the harmonization and curriculum hyperparameters (an edge package: imports optuna).

One study = one Optuna study in ``sweep.storage`` (sqlite by default, any SQLAlchemy URL for many
workers, ``journal:PATH`` for Optuna's journal file) + one MLflow parent run ``sweep/{study}`` +
one folder ``{paths.results}/sweep/{study}/`` (names in :mod:`cmgh.layout`)::

    study.yaml                  the study's name and storage (masked): a study of another storage is refused here
    trial{N}/pretrain/          the trial's pre-training run (checkpoint, config, train log)
    trial{N}/eval/step{S}/      validation evaluations (intermediate values + the final one)
    trial{N}/seed{S}/{pretrain,eval}/   the same per seed, when sweep.seeds has several
    trial{N}/[seed{S}/]eval/random_init/   the baseline trial's model at its initial weights (the floor)
    trials.csv                  study.trials_dataframe() (this and the files below: once a trial completed)
    best_params.yaml            the best trial's sampled values as config overrides, and the verdict
    tuned_variant.yaml          ``variants: {tuned: ...}``: base variant + best values (a config fragment);
                                without a verdict for it, ``tuned`` is the string saying why (stacking it fails)
    optimization_history.png, param_importances.png, parallel_coordinate.png

A trial pre-trains ``sweep.base_variant`` with the sampled values for ``sweep.steps`` steps and
is scored on a validation split only (``sweep.objective``, one of
:data:`cmgh.evaluate.VALIDATION_METRICS`; never a test split). Every ``sweep.report_every`` steps
the checkpoint is evaluated the same way and reported to the pruner, which may stop the trial
(PRUNED, its checkpoint kept). A trial that raises is recorded FAIL and the study goes on; a trial
whose worker died (no heartbeat) is retried by ``RetryHeartbeatStaleTrialCallback`` and resumes
from its checkpoint.

With several ``sweep.seeds`` a trial trains each seed to the end and scores it once; its value is
the mean over the seeds. ``pruner: wilcoxon`` gets each seed's value as an instance
(``trial.report(value, step=seed)``) and may stop the trial before its remaining seeds
(:mod:`~cmgh.sweep.seeds`; which pruner fits how many seeds is checked in :mod:`cmgh.config`).

A new study's first trial is the baseline: the base variant at its own values (user attribute
``reference: baseline``, queued whenever the study has none). The best trial becomes a ``tuned`` variant only if it beats the baseline by
more than the validation split's resolution (one clip's share); every finished trial's line and the
verdict show the baseline, the random-init floor and the resolution (:mod:`~cmgh.sweep.reference`).

``run_study(cfg, n_trials=N)`` continues the study until it holds N finished (complete or
pruned) trials: re-running it is resumable and adds only the remainder. ``worker_trials=K``
instead runs exactly K finished trials in this process, whatever the study holds (many workers
on one study, each with its own budget).

Modules: :mod:`~cmgh.sweep.space` (config -> search space -> trial config),
:mod:`~cmgh.sweep.storage` (storage, sampler, pruner), :mod:`~cmgh.sweep.objective` (one trial),
:mod:`~cmgh.sweep.validation` (a trial's validation value, the split's size and resolution),
:mod:`~cmgh.sweep.seeds` (a trial's seeds: their order, the run seen per seed),
:mod:`~cmgh.sweep.reference` (baseline, floor, resolution, verdict), :mod:`~cmgh.sweep.study` (the loop),
:mod:`~cmgh.sweep.outputs` (the study's files).
"""

from cmgh.sweep.objective import Objective
from cmgh.sweep.outputs import recorded_verdict, tuned_set_option, tuned_variant, write_outputs, write_plots
from cmgh.sweep.reference import Verdict, verdict
from cmgh.sweep.space import base_variant, search_space, suggest, trial_config
from cmgh.sweep.storage import (
    FINISHED,
    SweepError,
    dashboard_command,
    finished_trials,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
    redacted,
    storage_url,
    study_name,
)
from cmgh.sweep.study import run_study
from cmgh.sweep.validation import resolution, validation_value

__all__ = [
    "FINISHED", "Objective", "SweepError", "Verdict", "base_variant", "dashboard_command", "finished_trials", "make_pruner",
    "make_sampler", "make_storage", "open_study", "recorded_verdict", "redacted", "resolution", "run_study", "search_space",
    "storage_url", "study_name", "suggest", "trial_config", "tuned_set_option", "tuned_variant", "validation_value", "verdict",
    "write_outputs", "write_plots",
]  # fmt: skip

"""Optuna studies over the harmonization and curriculum hyperparameters (an edge module: imports optuna).

One study = one Optuna study in ``sweep.storage`` (sqlite by default, any SQLAlchemy URL for many
workers, ``journal:PATH`` for Optuna's journal file) + one MLflow parent run ``sweep/{study}`` +
one folder ``{paths.results}/sweep/{study}/``::

    trial{N}/pretrain/          the trial's pre-training run (checkpoint, config, train log)
    trial{N}/eval/step{S}/      validation evaluations (intermediate values + the final one)
    trials.csv                  study.trials_dataframe()
    best_params.yaml            the best trial's sampled values as config overrides
    tuned_variant.yaml          ``variants: {tuned: ...}``: base variant + best values (a config fragment)
    optimization_history.png, param_importances.png, parallel_coordinate.png

A trial pre-trains ``sweep.base_variant`` with the sampled values for ``sweep.steps`` steps and
is scored on a validation split only (``sweep.objective``: the kinetics val split or AudioSet's
held-out part of train; never a test split). Every ``sweep.report_every`` steps the checkpoint
is evaluated the same way and reported to the pruner, which may stop the trial (PRUNED, its
checkpoint kept). A trial that raises is recorded FAIL and the study goes on; a trial whose
worker died (no heartbeat) is retried by ``RetryHeartbeatStaleTrialCallback`` and resumes from its
checkpoint.

``run_study(cfg, n_trials=N)`` continues the study until it holds N finished (complete or
pruned) trials: re-running it is resumable and adds only the remainder. ``worker_trials=K``
instead runs exactly K finished trials in this process, whatever the study holds (many workers
on one study, each with its own budget).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from cmgh import config as config_mod
from cmgh.config import Config
from cmgh.errors import CmghError, ConfigError
from cmgh.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

OBJECTIVES: dict[str, tuple[str, str]] = {
    "kinetics_val_top1": ("kinetics", "val_top1"),
    "audioset_val_mAP": ("audioset", "val_mAP"),
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")
TUNED_VARIANT = "tuned"


class SweepError(CmghError):
    """A study cannot go on (too many failed trials, no completed trial, bad storage)."""


# --------------------------------------------------------------------------- config -> optuna


def search_space(cfg: Config) -> dict[str, dict[str, Any]]:
    """``sweep.space`` checked against the config: every key exists and every distribution is complete."""
    tree = cfg.to_dict()
    space = copy.deepcopy(tree["sweep"]["space"])
    if not space:
        raise ConfigError("sweep.space: empty (expected at least one config key -> distribution)")
    for key, dist in space.items():
        node: Any = tree
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(key.split(".")[:depth]) or "<root>"
                raise ConfigError(f"sweep.space.{key}: no such config key ({part!r} is not under {where})")
            node = node[part]
        if isinstance(node, dict):
            raise ConfigError(f"sweep.space.{key}: is a section, expected a single value")
        if key.split(".")[0] in ("sweep", "variants", "paths", "tracking"):
            raise ConfigError(f"sweep.space.{key}: cannot tune the {key.split('.')[0]} section")
        kind = dist["type"]
        if kind == "categorical":
            if not dist.get("choices"):
                raise ConfigError(f"sweep.space.{key}: a categorical parameter needs choices")
        else:
            if "low" not in dist or "high" not in dist:
                raise ConfigError(f"sweep.space.{key}: a {kind} parameter needs low and high")
            if not dist["low"] < dist["high"]:
                raise ConfigError(f"sweep.space.{key}: low {dist['low']} is not below high {dist['high']}")
            if dist.get("log") and dist["low"] <= 0:
                raise ConfigError(f"sweep.space.{key}: log scale needs low > 0, got {dist['low']}")
    return space


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, dist in space.items():
        kind = dist["type"]
        if kind == "categorical":
            params[key] = trial.suggest_categorical(key, list(dist["choices"]))
        elif kind == "int":
            params[key] = trial.suggest_int(key, int(dist["low"]), int(dist["high"]), step=int(dist.get("step") or 1), log=bool(dist.get("log", False)))
        else:
            params[key] = trial.suggest_float(key, float(dist["low"]), float(dist["high"]), step=dist.get("step"), log=bool(dist.get("log", False)))
    return params


def nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def base_variant(cfg: Config) -> dict[str, Any]:
    variants = cfg.to_dict()["variants"]
    name = str(cfg.sweep.base_variant)
    if name not in variants:
        raise ConfigError(f"sweep.base_variant: {name!r} is not a variant (expected one of {', '.join(variants)})")
    return copy.deepcopy(variants[name])


def trial_config(cfg: Config, params: Mapping[str, Any], name: str) -> Config:
    """The config a trial trains with: variant ``name`` = base variant + sampled values, and the
    sweep's step budget (checkpoints every ``report_every`` steps, where the pruner looks)."""
    tree = cfg.to_dict()
    tree["pretrain"]["steps"] = int(cfg.sweep.steps)
    tree["pretrain"]["checkpoint_every"] = int(cfg.sweep.report_every)
    tree["variants"][name] = config_mod.deep_merge(base_variant(cfg), nested(params))
    trial_cfg = config_mod.from_dict(tree)
    config_mod.for_variant(trial_cfg, name)  # an impossible combination fails here, naming the key
    return trial_cfg


def storage_url(cfg: Config) -> str:
    """The storage as a URL: empty -> ``sqlite:///{results}/optuna.db``; relative sqlite/journal paths resolved."""
    url = str(cfg.sweep.storage or "").strip()
    if not url:
        return f"sqlite:///{cfg.path('results') / 'optuna.db'}"
    if url.startswith("journal:"):
        return f"journal:{config_mod.resolve_path(url[len('journal:'):])}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and rest != ":memory:":
            return f"sqlite:///{config_mod.resolve_path(rest)}"
    return url


def redacted(url: str) -> str:
    """The URL without its password (for logs and MLflow tags)."""
    if "://" not in url or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - best effort
        return url.split("://")[0] + "://***"


def make_storage(cfg: Config) -> optuna.storages.BaseStorage:
    url = storage_url(cfg)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    attempts = 3  # workers started together race to create the tables: the loser retries
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {"connect_args": {"timeout": 60}},
                    heartbeat_interval=int(cfg.sweep.heartbeat_interval),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=int(cfg.sweep.max_retry)),
                )
        except Exception as exc:  # noqa: BLE001 - one line for the user
            if attempt + 1 < attempts:
                time.sleep(1.0 + attempt)
                continue
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise SweepError(f"sweep.storage: cannot open {redacted(url)} ({type(exc).__name__}: {first})") from None
    raise AssertionError("unreachable")


def make_sampler(cfg: Config, worker: bool = False) -> optuna.samplers.BaseSampler:
    """The seeded sampler. Concurrent workers with one seed would propose the very same trials, so a
    worker (``worker=True``) mixes its process id and start time into the seed: a many-worker study is
    not bit-reproducible (nor is Optuna's parallel sampling: it depends on completion order)."""
    seed = int(cfg.sweep.seed)
    if worker:
        seed = (seed * 1_000_003 + os.getpid() * 7919 + time.time_ns()) % 2**32
    if cfg.sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(cfg: Config) -> optuna.pruners.BasePruner:
    kind = str(cfg.sweep.pruner)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(cfg.sweep.prune_startup_trials), n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(cfg.sweep.report_every), max_resource=int(cfg.sweep.steps))
    return optuna.pruners.NopPruner()


def dashboard_command(cfg: Config) -> str:
    url = storage_url(cfg)
    target = url[len("journal:") :] if url.startswith("journal:") else url
    return f"optuna-dashboard {target} --host 127.0.0.1"


def study_dir(cfg: Config, study: str | None = None) -> Path:
    return cfg.path("results") / "sweep" / str(study or cfg.sweep.study)


# --------------------------------------------------------------------------- one trial


def _validation_value(cfg: Config, run_dir: Path, eval_dir: Path) -> float:
    """The objective on the validation split for the checkpoint in ``run_dir`` (RNG state untouched)."""
    from cmgh.evaluate.run import evaluate
    from cmgh import checkpoint as ckpt

    task, key = OBJECTIVES[str(cfg.sweep.objective)]
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

    def __init__(self, cfg: Config, study_name: str) -> None:
        self.cfg = cfg
        self.study_name = study_name
        self.space = search_space(cfg)
        self.out = study_dir(cfg, study_name)

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

        cfg = self.cfg
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        retried = frozen.system_attrs.get("failed_trial")  # RetryHeartbeatStaleTrialCallback's mark
        number = retried if retried is not None else trial.number  # a retry resumes the dead trial's run
        name = f"trial{number}"
        folder = self.out / name
        params = suggest(trial, self.space)
        trial.set_user_attr("folder", str(folder))
        tcfg = trial_config(cfg, params, name)
        run_cfg = config_mod.for_variant(tcfg, name)
        steps, every = int(cfg.sweep.steps), int(cfg.sweep.report_every)
        tags = {"stage": "sweep_trial", "study": self.study_name, "trial": trial.number, "backbone": cfg.sweep.backbone,
                "variant": name, "base_variant": cfg.sweep.base_variant, "objective": cfg.sweep.objective}
        tracker = open_tracker(run_cfg, f"sweep/{self.study_name}/{name}", tags, nested_under=f"sweep/{self.study_name}")
        tracker.log_params({f"optuna.{k}": v for k, v in params.items()})
        run_dir = folder / "pretrain"

        def on_step(done: int, model: Any) -> None:
            if done % every or done >= steps:
                return
            value = _validation_value(tcfg, run_dir, folder / "eval" / f"step{done:06d}")
            trial.report(value, done)
            tracker.log_metrics({f"sweep/{cfg.sweep.objective}": value}, step=done)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned at step {done} ({cfg.sweep.objective}={value:.4g})")

        status = "FAILED"
        try:
            pretrain(tcfg, RunSpec(str(cfg.sweep.backbone), name, int(cfg.sweep.trial_seed), run_dir), tracker=tracker, on_step=on_step)
            value = _validation_value(tcfg, run_dir, folder / "eval" / f"step{steps:06d}")
            tracker.log_metrics({f"sweep/{cfg.sweep.objective}": value}, step=steps)
            status = "FINISHED"
            return value
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        finally:
            tracker.close(status)


# --------------------------------------------------------------------------- the study


def open_study(cfg: Config, study: str | None = None, worker: bool = False) -> optuna.Study:
    name = str(study or cfg.sweep.study)
    return optuna.create_study(
        storage=make_storage(cfg),
        study_name=name,
        sampler=make_sampler(cfg, worker),
        pruner=make_pruner(cfg),
        direction=str(cfg.sweep.direction),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(cfg: Config, study: str | None = None, n_trials: int | None = None, *, worker_trials: int | None = None) -> optuna.Study:
    """Run (or continue) a study; writes trials.csv, best_params.yaml, tuned_variant.yaml and plots.

    ``n_trials`` (default ``sweep.n_trials``) is the number of finished trials the study should
    hold; ``worker_trials`` instead runs exactly that many finished trials in this process.
    """
    from cmgh.track import open_tracker

    if study:
        cfg = config_mod.with_overrides(cfg, [f"sweep.study={study}"])
    name = str(cfg.sweep.study)
    if str(cfg.sweep.objective) not in OBJECTIVES:
        raise ConfigError(f"sweep.objective: {cfg.sweep.objective!r} is not one of {', '.join(OBJECTIVES)}")
    search_space(cfg)
    base_variant(cfg)
    target = int(n_trials if n_trials is not None else cfg.sweep.n_trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_study(cfg, name, worker=worker_trials is not None)
    st.set_user_attr("objective", str(cfg.sweep.objective))
    st.set_user_attr("base_variant", str(cfg.sweep.base_variant))
    objective = Objective(cfg, name)
    tags = {"stage": "sweep", "study": name, "storage": redacted(storage_url(cfg)), "objective": cfg.sweep.objective}
    parent = open_tracker(cfg, f"sweep/{name}", tags)
    status = "FAILED"
    try:
        failures = mine = 0
        while True:
            remaining = (worker_trials - mine) if worker_trials is not None else target - finished_trials(st)
            if remaining <= 0:
                break
            done: list[FrozenTrial] = []
            st.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[lambda _s, t: done.append(t)], gc_after_trial=True)
            trial = done[-1]
            if trial.state == TrialState.FAIL:
                failures += 1
                reason = str(trial.user_attrs.get("fail_reason", "")).strip().splitlines()
                log.warning("study %s: trial %d failed (%s)", name, trial.number, reason[-1] if reason else "see the log")
                if failures > int(cfg.sweep.max_failures):
                    raise SweepError(f"study {name}: {failures} failed trials in this worker (sweep.max_failures={cfg.sweep.max_failures}); last: {reason[-1] if reason else '?'}")
            else:
                mine += 1
        write_outputs(cfg, st)
        complete = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            parent.log_metrics({f"best/{cfg.sweep.objective}": float(st.best_value), "trials_finished": float(finished_trials(st))})
            parent.set_tags({"best_trial": str(st.best_trial.number)})
        for path in sorted(study_dir(cfg, name).glob("*.*")):
            if path.suffix in (".csv", ".yaml", ".png"):
                parent.log_artifact(path)
        status = "FINISHED"
    finally:
        parent.close(status)
    return st


# --------------------------------------------------------------------------- outputs


def write_outputs(cfg: Config, study: optuna.Study) -> Path:
    """trials.csv, best_params.yaml, tuned_variant.yaml and the plots of ``study``, atomically."""
    out = study_dir(cfg, study.study_name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SweepError(f"study {study.study_name}: no completed trial yet (see {out / 'trials.csv'})")
    best = study.best_trial
    base = str(study.user_attrs.get("base_variant", cfg.sweep.base_variant))
    base_entry = copy.deepcopy(cfg.to_dict()["variants"].get(base, {}))
    record = {
        "study": study.study_name,
        "objective": str(study.user_attrs.get("objective", cfg.sweep.objective)),
        "direction": study.direction.name.lower(),
        "value": float(best.value),
        "trial": best.number,
        "base_variant": base,
        "base_variant_overrides": base_entry,
        "params": dict(best.params),
        "overrides": [f"{k}={v}" for k, v in best.params.items()],
    }
    atomic_write_text(out / "best_params.yaml", yaml.safe_dump(record, sort_keys=False))
    atomic_write_text(out / "tuned_variant.yaml", yaml.safe_dump({"variants": {TUNED_VARIANT: tuned_variant(out / "best_params.yaml")}}, sort_keys=False))
    write_plots(study, out)
    return out


def tuned_variant(best_params_path: str | Path) -> dict[str, Any]:
    """The ``variants.tuned`` entry from a best_params.yaml: the base variant + the best values."""
    path = Path(best_params_path)
    if not path.is_file():
        raise SweepError(f"{path}: no best_params.yaml (run cmgh sweep first)")
    record = yaml.safe_load(path.read_text()) or {}
    if "params" not in record:
        raise SweepError(f"{path}: not a cmgh sweep best_params.yaml (no 'params')")
    return config_mod.deep_merge(dict(record.get("base_variant_overrides") or {}), nested(record["params"]))


def tuned_set_option(best_params_path: str | Path) -> str:
    """A ``--set`` argument defining ``variants.tuned`` (one line of flow YAML)."""
    text = yaml.safe_dump(tuned_variant(best_params_path), default_flow_style=True, width=10**6).strip()
    return f"variants.{TUNED_VARIANT}={text}"


def write_plots(study: optuna.Study, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers = {
        "optimization_history": lambda: ovm.plot_optimization_history(study),
        "param_importances": lambda: ovm.plot_param_importances(study) if len(complete) >= 2 else None,
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study),
    }
    paths = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():  # "experimental" plots, flat axes of constant params
                warnings.simplefilter("ignore")
                ax = make()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure if ax is not None else None
        except Exception as exc:  # noqa: BLE001 - a plot never fails a study (e.g. one distinct value)
            log.info("plot %s unavailable: %s", name, exc)
            fig = None
        if fig is None:
            fig, axis = plt.subplots(figsize=(6, 2))
            axis.axis("off")
            axis.text(0.5, 0.5, f"{name.replace('_', ' ')}: needs at least 2 completed trials\nwith varying parameters",
                      ha="center", va="center")
        fig.tight_layout()
        with atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        paths[name] = out / f"{name}.png"
    return paths

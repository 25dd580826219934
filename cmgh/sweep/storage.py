"""Where a study lives and how it samples: storage URL and backend, sampler, pruner, the study itself."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cmgh import config as config_mod
from cmgh import layout
from cmgh.config import Config
from cmgh.errors import CmghError, ConfigError, DataError
from cmgh.io import safe_id
from cmgh.sweep import workers
from cmgh.track.uri import redacted, resolve_sqlite, sqlite_path, sqlite_url, unmasked

JOURNAL = "journal:"  # Optuna's journal file backend: journal:PATH
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards a study's budget


class SweepError(CmghError):
    """A study cannot go on (too many failed trials, no completed trial, bad storage)."""


def study_name(cfg: Config, study: str | None = None) -> str:
    """The study's name if it is a safe folder name (:func:`cmgh.io.safe_id`, the rule the schema's
    ``sweep.study`` pattern spells): it becomes ``sweep/{study}/`` under the results."""
    name = str(study or cfg.sweep.study)
    try:
        return safe_id(name, "sweep.study")
    except DataError:
        raise ConfigError(f"sweep.study: {name!r} is not a safe folder name (expected letters, digits, '_', '-', '.', '=', "
                          "no leading '.', no '..', at most 200 characters)") from None


def storage_url(cfg: Config) -> str:
    """The storage as a URL: empty -> ``sqlite:///{results}/optuna.db``; relative sqlite/journal paths resolved."""
    url = unmasked(str(cfg.sweep.storage or "").strip(), "sweep.storage")
    if not url:
        return sqlite_url(cfg.path("results") / layout.OPTUNA_DB)
    if url.startswith(JOURNAL):
        return f"{JOURNAL}{config_mod.resolve_path(url[len(JOURNAL):])}"
    return resolve_sqlite(url)


def writable_file(path: Path) -> Path:
    """``path`` if this process can create or append to it and write beside it (Optuna's journal lock
    is a file beside the journal, sqlite's a journal file beside the database); ConfigError otherwise,
    before any trial runs (root ignores permissions, not a regular file in the way)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
        if path.exists():
            with open(path, "ab"):
                pass
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            reason = f"{blocker} is a file, not a folder"
        else:
            reason = f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
        raise ConfigError(f"sweep.storage: {path} is not writable ({reason})") from None
    return path


def make_storage(cfg: Config) -> optuna.storages.BaseStorage:
    url = storage_url(cfg)
    if url.startswith(JOURNAL):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = writable_file(Path(url[len(JOURNAL) :]))
        return JournalStorage(JournalFileBackend(str(path)))
    db = sqlite_path(url)
    if db is not None:
        writable_file(db)
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


def make_sampler(cfg: Config, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler of ``sweep.sampler``, seeded with ``seed`` (default ``sweep.seed``; per process:
    :func:`cmgh.sweep.workers.seed`)."""
    seed = int(cfg.sweep.seed) if seed is None else int(seed)
    if cfg.sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(cfg: Config) -> optuna.pruners.BasePruner:
    """median/hyperband on a one-seed trial's steps; wilcoxon on its seeds as instances (the config
    check in :mod:`cmgh.config` pairs each pruner with the seed count it needs)."""
    kind = str(cfg.sweep.pruner)
    if kind == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" since optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=float(cfg.sweep.wilcoxon_p_threshold), n_startup_steps=2)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(cfg.sweep.prune_startup_trials), n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(cfg.sweep.report_every), max_resource=int(cfg.sweep.steps))
    return optuna.pruners.NopPruner()


def dashboard_command(cfg: Config) -> str:
    url = storage_url(cfg)
    target = url[len(JOURNAL) :] if url.startswith(JOURNAL) else url
    return f"optuna-dashboard {target} --host 127.0.0.1"


def open_study(cfg: Config, study: str | None = None, worker: bool = False) -> optuna.Study:
    """The study, created or loaded; trials a dead process left RUNNING here failed and retried, and
    the sampler seeded for this process (:mod:`cmgh.sweep.workers`)."""
    return create_or_load(cfg, study, worker)[0]


def create_or_load(cfg: Config, study: str | None = None, worker: bool = False) -> tuple[optuna.Study, bool]:
    """:func:`open_study`, and whether this process created the study: the storage's unique study name
    makes exactly one of several workers started together its creator (the one that queues the baseline)."""
    name = study_name(cfg, study)
    storage = make_storage(cfg)
    created = True
    for load in (False, True):
        try:
            st = optuna.create_study(storage=storage, study_name=name, sampler=make_sampler(cfg), pruner=make_pruner(cfg),
                                     direction=str(cfg.sweep.direction), load_if_exists=load)
            break
        except optuna.exceptions.DuplicatedStudyError:
            created = False
    if not st.metric_names:  # the dashboard's axes and tables then name the metric, not "Objective 0"
        with warnings.catch_warnings():  # experimental in Optuna 4, stable in use since 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            st.set_metric_names([str(cfg.sweep.objective)])
    workers.reap_stale(st, int(cfg.sweep.max_retry))
    st.sampler = make_sampler(cfg, workers.seed(int(cfg.sweep.seed), st, worker))
    return st, created


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))

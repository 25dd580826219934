"""The processes that run a study's trials: each samples with its own seed, and a trial whose process
died is failed and retried on every storage.

Optuna's RDB storages notice a dead trial by its missing heartbeats; its journal storage has none,
so a killed trial would stay RUNNING for ever. Each trial records the host and process running it
(:data:`WORKER_ATTR`); opening the study fails and retries (as Optuna's stale-heartbeat callback
does) every RUNNING trial of this host whose process is gone. Processes that seeded their samplers
alike would propose the very same trials, so the seed also depends on the trials the study holds
(a resumed study does not re-propose its first trials) and, while another process is running
trials, on this process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

log = logging.getLogger(__name__)
WORKER_ATTR = "cmgh_worker"  # user attr of a trial: "<host>:<pid>" of the process running it


def mark(trial: optuna.Trial) -> None:
    """Record this process as the one running ``trial``."""
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def reap_stale(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail and retry the RUNNING trials of this host whose process is gone; their numbers."""
    host, reaped = socket.gethostname(), []
    with warnings.catch_warnings():  # "experimental" in optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    storage = study._storage  # the public API cannot change another trial's state
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if owner != host or not pid.isdigit() or _alive(int(pid)):
            continue
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        retry(study, storage.get_trial(trial._trial_id))
        log.warning("study %s: trial %d was left RUNNING by process %s, which is gone: failed, and retried (at most %d times)",
                    study.study_name, trial.number, pid, max_retry)
        reaped.append(trial.number)
    return reaped


def seed(base: int, study: optuna.Study, worker: bool) -> int:
    """The sampler's seed: ``base`` for a new study run by one process; mixed with the trials the study
    holds (a resumed study proposes new points, still reproducibly), and with this process when it is a
    worker or another process is running trials (distinct proposals; then not bit-reproducible)."""
    trials = study.get_trials(deepcopy=False)
    held = len(trials)
    concurrent = worker or any(t.state == TrialState.RUNNING for t in trials)
    if not held and not concurrent:
        return base
    mixed = (base * 1_000_003 + held * 7_919) % 2**32
    if concurrent:
        if not worker:
            log.warning("study %s: another process is running trials: this one samples with its own seed", study.study_name)
        mixed = (mixed + os.getpid() * 104_729 + time.time_ns()) % 2**32
    return mixed

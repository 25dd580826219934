"""What each stage's outputs depend on: the one definition per stage of the config keys that change
a result, read by every side that must agree on it.

- the workflow's rerun triggers (a rule's ``params.slice``: a changed value reruns exactly its jobs,
  built from these by :mod:`cmgh.plan.triggers`);
- the run's own guards: a generated dataset's stamp (:func:`cmgh.data.synth.stamp_of`), the
  pre-training resume guard (:mod:`cmgh.train.state`);
- the tracking key of a run (:func:`run_identity`, hashed into the MLflow run key).

Functions take a config (anything with ``to_dict()``) or its tree. Kept light (no torch, no
Snakemake): the Snakefile imports it at parse time, and :mod:`cmgh.config` re-exports its names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from cmgh.keypaths import get_path

Tree = Mapping[str, Any]

# --------------------------------------------------------------------------- data

CORPUS_SYNTH = ("seed", "concepts", "media")  # data.synth keys shared by every generated dataset


def _tree(cfg: Any) -> Tree:
    return cfg.to_dict() if hasattr(cfg, "to_dict") else cfg


def synth_inputs(cfg: Any, dataset: str, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """What one generated dataset's bytes depend on: the shared generator keys, its own section (if
    it has one) and the other ``data.<section>`` its generator reads (``DatasetSpec.synth_sections``:
    ``noise`` for a noisy corpus), so a knob of another dataset does not regenerate it."""
    tree = _tree(cfg)
    synth = tree["data"]["synth"]
    keys = {k: synth[k] for k in CORPUS_SYNTH}
    keys[dataset] = synth.get(dataset, {})
    for section in sections:
        keys[section] = tree["data"][section]
    return keys


def download_inputs(cfg: Any, dataset: str) -> dict[str, Any]:
    """What one downloaded dataset depends on: its sources and the clip re-encoding, not politeness knobs."""
    download = _tree(cfg)["data"]["download"]
    return {"sources": download[dataset], "reencode": download["reencode"]}


# --------------------------------------------------------------------------- features

# features keys that change what extraction writes, per features.format (the rest, e.g. the
# augmentation or the shuffle buffer, change only what training reads from the files)
EXTRACTION_INPUTS = {
    "decoded": ("features.video.frames", "features.video.fps", "features.video.size", "features.audio", "features.text",
                "features.clips_per_video", "features.shard_size"),
    "packed": ("features.video.fps", "features.video.short_side", "features.audio", "features.packed.max_seconds",
               "features.packed.crf", "features.packed.keyframe_seconds", "features.packed.audio_kbps", "features.shard_size"),
}
# features keys that change what a packed stream draws from its files (windows, crops, text)
STREAM_INPUTS = ("features.video.frames", "features.video.size", "features.text", "features.augment", "features.packed.shuffle_buffer")
VOCAB_INPUTS = ("features.text",)  # what the vocabulary built from the pre-training captions depends on


def feature_inputs(fmt: str) -> tuple[str, ...]:
    """The features keys a pre-training run in ``features.format`` ``fmt`` depends on (a decoded
    run ignores the packing and augmentation keys, a packed one the decoded windows)."""
    return ("features.format", *EXTRACTION_INPUTS[fmt], *(STREAM_INPUTS if fmt == "packed" else ()))


# keys that say where files are read from, never what is computed: left out of every section
# key_values returns (a random encoder's rerun trigger hashes the whole features section)
READ_LOCATIONS = ("features.packed.remote",)


def key_values(cfg: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """``{dotted key: value}`` of config sections or dotted keys (``features.video.fps``), without
    :data:`READ_LOCATIONS`."""
    tree = _tree(cfg)
    return {k: _without_locations(k, get_path(tree, k)) for k in keys}


def _without_locations(key: str, value: Any) -> Any:
    for location in READ_LOCATIONS:
        if location.startswith(f"{key}.") and isinstance(value, Mapping):
            value = copy.deepcopy(dict(value))
            *sections, last = location[len(key) + 1 :].split(".")
            node = value
            for section in sections:
                node = node.get(section) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    return value


# --------------------------------------------------------------------------- pre-training

# pretrain keys that change no result of a run: the seed list, save and scoring cadence, loader
# processes and the GPU and node counts (data parallelism is exact).
NOT_TRAINING_INPUTS = ("seeds", "checkpoint_every", "score_every", "log_every", "num_workers", "gpus", "nodes",
                       "budget", "step_cost")  # (these two act through `steps`, which the variant's config has resolved)
# pretrain keys added after results existed, with the value at which a run computes exactly what it
# computed before the key existed: left out of the identity at that value (any other value enters it),
# so adding a choice neither reruns nor refuses to resume a finished or running run
# (a path under pretrain; SCHEMA_DEFAULT: the schema's default of that key or whole section)
SCHEMA_DEFAULT = object()
LATER_KEYS: dict[tuple[str, ...], Any] = {
    ("harmonize", "per_sample"): "batch_mixed",
    ("harmonize", "granularity"): "sample",
    ("harmonize", "cagrad"): SCHEMA_DEFAULT,
    ("curriculum", "threshold"): 0.0,
    ("curriculum", "flagged_weight"): 0.0,
    ("curriculum", "quality_auroc"): 0.8,
    ("curriculum", "quality_seed"): 0,
    ("curriculum", "mixture"): SCHEMA_DEFAULT,
    ("curriculum", "coteaching"): SCHEMA_DEFAULT,
    ("balance",): SCHEMA_DEFAULT,
    ("compile_backend",): "inductor",
}
RUN_OUTPUT_INPUTS = ("score_every",)  # pretrain keys that change what a run writes besides its model (the score dumps)


def training_inputs(cfg: Any) -> dict[str, Any]:
    """What a pre-training run's result depends on, from its variant's resolved config: the corpus
    and its noise (not the downstream sets), features, model and the pretrain settings. The resume
    guard hashes it and the workflow's rerun trigger carries it, so the two cannot disagree."""
    tree = _tree(cfg)
    synth = tree["data"]["synth"]
    corpora = [entry["dataset"] for entry in tree["pretrain"]["corpora"]]
    return {
        "corpus": {k: synth[k] for k in (*CORPUS_SYNTH, *corpora) if k in synth},
        "noise": tree["data"]["noise"],
        "features": key_values(tree, feature_inputs(tree["features"]["format"])),
        "model": tree["model"],
        "pretrain": _without_later_keys({k: v for k, v in tree["pretrain"].items() if k not in NOT_TRAINING_INPUTS}),
    }


def _without_later_keys(pretrain: dict[str, Any]) -> dict[str, Any]:
    """``pretrain`` without the :data:`LATER_KEYS` that hold their neutral value."""
    out = dict(pretrain)
    for path, neutral in LATER_KEYS.items():
        *sections, key = path
        node = out
        for section in sections:
            if not isinstance(node.get(section), dict):
                break
            node[section] = dict(node[section])  # copies along the path: the caller's tree is left as it was
            node = node[section]
        else:
            if key in node and node[key] == _neutral(path, neutral):
                del node[key]
    return out


def _neutral(path: tuple[str, ...], neutral: Any) -> Any:
    """A later key's neutral value (:data:`SCHEMA_DEFAULT` resolved from the schema, sections filled in)."""
    if neutral is not SCHEMA_DEFAULT:
        return neutral
    from cmgh import schema

    node: Mapping[str, Any] = schema.schema()["properties"]["pretrain"]
    for part in path:
        node = node["properties"][part]
    value = copy.deepcopy(node.get("default", {} if node.get("type") == "object" else None))
    schema.fill_defaults(node, value)
    return value


def pretrain_job_inputs(cfg: Any) -> dict[str, Any]:
    """What a pre-training job writes depends on: :func:`training_inputs` plus the score dumps' cadence
    (another seed or the GPU count changes neither)."""
    tree = _tree(cfg)
    return {**training_inputs(tree), **{k: tree["pretrain"][k] for k in RUN_OUTPUT_INPUTS}}


# --------------------------------------------------------------------------- evaluation

# evaluate keys that say which evaluations run and in how many jobs: they change no result
EVALUATION_PLAN = ("tasks", "jobs", "random_init")
ENCODER_MODEL_INPUTS = ("model", "features")  # what a randomly initialized encoder's evaluation depends on besides `evaluate`


def encoder_evaluation(cfg: Any, run_tasks: tuple[str, ...]) -> dict[str, Any]:
    """The `evaluate` section as the encoder evaluations and the sweep's validation read it: without
    :data:`EVALUATION_PLAN` and the settings of the ``run_tasks`` (:data:`cmgh.evaluate.RUN_TASKS`,
    read only by their own jobs)."""
    return {k: v for k, v in _tree(cfg)["evaluate"].items() if k not in (*run_tasks, *EVALUATION_PLAN)}


def run_task_settings(cfg: Any, task: str) -> dict[str, Any]:
    """A run task's own settings (``evaluate.<task>``), which only its jobs read."""
    return key_values(cfg, (f"evaluate.{task}",))


# --------------------------------------------------------------------------- studies

# sweep keys that change no trial: the study's name (in its run key), where it is stored, its budget and workers
NOT_SWEEP_INPUTS = ("run", "study", "storage", "n_trials", "workers", "max_failures", "heartbeat_interval", "max_retry")


def sweep_settings(cfg: Any) -> dict[str, Any]:
    """The `sweep` keys that change what a trial computes."""
    return {k: v for k, v in _tree(cfg)["sweep"].items() if k not in NOT_SWEEP_INPUTS}


# --------------------------------------------------------------------------- tracked runs

RUN_STAGES = ("pretrain", "evaluate", "sweep", "sweep_trial")


def run_identity(cfg: Any, stage: str) -> dict[str, Any]:
    """What a tracked run of ``stage`` computes from: the one rule per stage. Its hash is part of
    the MLflow run key, so a changed input opens a new run and an unchanged one continues its run.

    - ``pretrain`` (the variant's config): :func:`training_inputs`.
    - ``evaluate``: the encoder's training inputs + what it is scored on (the downstream sets,
      ``data.source``) + the whole ``evaluate`` section: :func:`encoder_evaluation`, the run tasks'
      settings and :data:`EVALUATION_PLAN` (a superset of the rerun trigger's keys, as the run keys
      of existing runs were made: a key that reruns an evaluation always opens a new run).
    - ``sweep_trial`` (the trial's config) and ``sweep`` (the study's config): the ``evaluate``
      identity (a trial pre-trains, then scores on a validation split) + :func:`sweep_settings`
      (not the study's name, storage, budget or workers, so a continued study stays one run).
    """
    if stage not in RUN_STAGES:
        raise ValueError(f"run stage {stage!r} is not one of {', '.join(RUN_STAGES)}")
    identity = training_inputs(cfg)
    if stage == "pretrain":
        return identity
    tree = _tree(cfg)
    data = tree["data"]
    identity["downstream"] = {"source": data["source"], **{k: v for k, v in data["synth"].items() if k not in identity["corpus"]}}
    identity["evaluate"] = tree["evaluate"]
    if stage in ("sweep", "sweep_trial"):
        identity["sweep"] = sweep_settings(tree)
    return identity

"""The workflow's rerun triggers: each rule's ``params.slice``, a JSON string of what its jobs' outputs
depend on (:mod:`cmgh.identity`, the definition the runs' own guards and tracking keys read too), so a
changed value reruns exactly its jobs and nothing else.

The strings are compared with those Snakemake recorded for existing outputs: their bytes are part of
the contract (a change reruns every job of the rule).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from cmgh.data import datasets
from cmgh import identity
from cmgh.evaluate import NOISE_TRAINING, RUN_TASKS
from cmgh.plan import Plan


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


class Triggers:
    """The rerun trigger of every rule of ``plan``'s DAG (a dry run asks each job's: computed once)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tree = plan.cfg.to_dict()

    @functools.cache  # noqa: B019 (one per parse)
    def keys(self, *keys: str) -> str:
        """Config sections or dotted keys (``features.video.fps``)."""
        return _json(identity.key_values(self.tree, keys))

    def synth(self, dataset: str) -> str:
        """What one generated dataset depends on: a knob of another dataset does not rerun it."""
        return _json(identity.synth_inputs(self.tree, dataset, datasets.get(dataset).synth_sections))

    def download(self, dataset: str) -> str:
        return _json(identity.download_inputs(self.tree, dataset))

    def vocab(self) -> str:
        return self.keys(*identity.VOCAB_INPUTS)

    def extraction(self, fmt: str) -> str:
        """What extraction writes in ``fmt`` (decoded or packed) depends on."""
        return self.keys(*identity.EXTRACTION_INPUTS[fmt])

    @functools.cache  # noqa: B019
    def pretrain(self, variant: str) -> str:
        """What a variant's runs compute plus what they write besides the model (the score dumps): a
        changed knob reruns only its branch; another seed or the GPU count none."""
        return _json(identity.pretrain_job_inputs(self.plan.variant_config(variant)))

    def _encoder_evaluation(self) -> dict[str, Any]:
        return identity.encoder_evaluation(self.tree, RUN_TASKS)

    @functools.cache  # noqa: B019
    def evaluation(self, *keys: str) -> str:
        """:meth:`keys` of ``keys`` and the encoder evaluations' `evaluate` section."""
        return _json({**identity.key_values(self.tree, keys), "evaluate": self._encoder_evaluation()})

    def noise_training(self) -> str:
        """The settings of noise detection over training (read only by its jobs)."""
        return self.keys(f"evaluate.{NOISE_TRAINING}")

    def evaluate(self, variant: str) -> str:
        """An evaluation job of a pre-trained run: its training, the encoder evaluations' settings and,
        in a `per_run` job, noise detection over training's."""
        return self.pretrain(variant) + self.evaluation() + (self.noise_training() if self.plan.per_run else "")

    def evaluate_random_init(self) -> str:
        """An evaluation job of a random encoder: its model and features, the encoder evaluations' settings."""
        return self.evaluation(*identity.ENCODER_MODEL_INPUTS)

    def run_evaluation(self, variant: str) -> str:
        """A noise-over-training job of its own: the run's training and the task's settings."""
        return self.pretrain(variant) + self.noise_training()

    def sweep(self) -> str:
        """What a study depends on: its settings, the validation protocol and what its base variant's runs
        compute (another variant's knob, another seed or the GPU count does not rerun it)."""
        base = self.plan.cfg.sweep.base_variant
        inputs = identity.training_inputs(self.plan.variant_config(base)) if base in self.tree["variants"] else None
        return _json({"sweep": self.tree["sweep"], "evaluate": self._encoder_evaluation(), "base_variant": inputs})

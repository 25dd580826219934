"""What the workflow computes for a config: the run grid, the evaluations and their jobs, the corpora
with a generated ground truth, the scaling pairs and the worlds of a noise study.

Decisions only, free of Snakemake (unit-tested in ``tests/test_plan.py``): ``workflow/rules/common.smk``
asks a :class:`Plan` and turns its answers into paths (:mod:`cmgh.layout`) and rules. The rerun
triggers are in :mod:`cmgh.plan.triggers`, the worlds' configs and modules in :mod:`cmgh.worlds`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from cmgh import config as cmgh_config
from cmgh import identity, layout, worlds
from cmgh.config import Config
from cmgh.data import datasets
from cmgh.data.datasets import NOISE_TRUTH, TOKENIZED
from cmgh.evaluate import NOISE_TRAINING, RUN_TASKS, TASK_DATASETS, TASKS, VALIDATION_METRICS, planned_tasks

Run = tuple[str, str, int]  # (backbone, variant, seed) of one pre-training run
PER_TASK, PER_RUN = "per_task", "per_run"  # evaluate.jobs


class Plan:
    """The decisions of one config's DAG, each computed once (a dry run asks every job's params)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.variants: tuple[str, ...] = tuple(cfg.variants)
        self.backbones: tuple[str, ...] = tuple(cfg.model.backbones)
        self.seeds: tuple[int, ...] = tuple(cfg.pretrain.seeds)
        self.planned_tasks = planned_tasks(cfg.data.source, TASKS, cfg.evaluate.tasks)
        self.planned_run_tasks = planned_tasks(cfg.data.source, RUN_TASKS, cfg.evaluate.tasks)
        self.per_run = cfg.evaluate.jobs == PER_RUN
        # The random-init floor reuses a trained run's folder only for its config and seed.
        self.reference_variant = layout.BASELINE_VARIANT if layout.BASELINE_VARIANT in self.variants else self.variants[0]
        self.worlds = worlds.settings(cfg.worlds.noise_rates, cfg.worlds.modalities)
        if self.worlds:
            worlds.check_world_variants(cfg.to_dict())  # a misnamed world or variant is refused before any job

    @functools.cache  # noqa: B019 (one Plan per parse: it lives as long as the workflow)
    def variant_config(self, variant: str) -> Config:
        """A variant's resolved config, resolved once: every job of the variant asks for it."""
        return cmgh_config.for_variant(self.cfg, variant)

    # ----------------------------------------------------------------------- pre-training

    def run_grid(self) -> list[Run]:
        """(backbone, variant, seed) of every pre-training run the config asks for."""
        return [(b, v, s) for b in self.backbones for v in self.variants for s in self.seeds]

    def corpora(self, variant: str | None = None) -> list[tuple[str, str]]:
        """(dataset, features format) of each corpus a pre-training run of ``variant`` reads (the
        base config's without one): `pretrain.corpora`, packed or decoded as `features.format` says."""
        tree = (self.variant_config(variant) if variant else self.cfg).to_dict()
        return [(name, cmgh_config.corpus_format(tree, name)) for name, _ in cmgh_config.corpora(tree["pretrain"])]

    def decoded_datasets(self) -> list[str]:
        """The evaluated datasets among `data.datasets`, whose features are decoded (sorted)."""
        wanted = {TASK_DATASETS[t] for t in self.planned_tasks} & set(self.cfg.data.datasets)
        return sorted(wanted)

    # ----------------------------------------------------------------------- evaluations

    @functools.cache  # noqa: B019
    def truth_corpora(self, variant: str) -> tuple[str, ...]:
        """The corpora of a variant's pre-training that carry a generated ground truth (cmgh.data.datasets.NOISE_TRUTH):
        each of its runs gets a noise-over-training job when there is one (none on downloaded data)."""
        if NOISE_TRAINING not in self.planned_run_tasks:
            return ()
        return tuple(name for name, _ in self.corpora(variant) if name in NOISE_TRUTH)

    @functools.cached_property
    def noise_training_in_run_job(self) -> bool:
        """`evaluate.jobs: per_run`: one job per run evaluates every planned encoder task, and noise detection
        over training too when every variant has a labelled corpus (a rule's outputs cannot depend on the variant)."""
        return self.per_run and NOISE_TRAINING in self.planned_run_tasks and all(self.truth_corpora(v) for v in self.variants)

    @functools.cached_property
    def run_job_tasks(self) -> tuple[str, ...]:
        """The tasks one `per_run` evaluation job of a pre-trained run evaluates."""
        return (*self.planned_tasks, *((NOISE_TRAINING,) if self.noise_training_in_run_job else ()))

    def evaluation_runs(self) -> list[Run]:
        """Every run whose encoder is evaluated: the grid, and the random initialization of each backbone
        and seed when `evaluate.random_init` (variant :data:`cmgh.layout.RANDOM_VARIANT`)."""
        randoms = [(b, layout.RANDOM_VARIANT, s) for b in self.backbones for s in self.seeds] if self.cfg.evaluate.random_init else []
        return self.run_grid() + randoms

    def evaluations(self) -> list[tuple[str, str, str, int]]:
        """(task, backbone, variant, seed) of every encoder evaluation."""
        return [(t, b, v, s) for t in self.planned_tasks for b, v, s in self.evaluation_runs()]

    def run_evaluations(self) -> list[Run]:
        """The runs whose own records are evaluated: noise detection over training of every run with a labelled corpus."""
        return [(b, v, s) for b, v, s in self.run_grid() if self.truth_corpora(v)]

    def noise_training_figures(self) -> list[tuple[str, str]]:
        """(backbone, variant) of each noise-over-training figure: one per variant whose runs have a job."""
        return [(b, v) for b in self.backbones for v in self.variants if self.truth_corpora(v)]

    def evaluation_tasks(self, random_init: bool) -> tuple[str, ...]:
        """The tasks of one `per_run` evaluation job (``random_init``: of a random encoder, which has no training to score)."""
        return self.planned_tasks if random_init else self.run_job_tasks

    def evaluation_job(self, random_init: bool) -> str:
        """One evaluation job's name under logs/ and benchmarks/ (with its wildcards): per task and run, or per run."""
        variant = layout.RANDOM_VARIANT if random_init else "{variant}"
        return f"{'' if self.per_run else '{task}/'}{{backbone}}/{variant}/seed{{seed}}"

    # ----------------------------------------------------------------------- the worlds of a noise study

    @functools.cached_property
    def shared(self) -> worlds.SharedSets:
        """What a noise study's worlds read from one shared tree: the generated datasets whose generator
        reads the same keys in every world (:func:`cmgh.identity.synth_inputs`, what each synth job's rerun
        trigger states: Kinetics, AudioSet and MSR-VTT, not the noisy corpus), and the decoded features of
        those that are not tokenized (a tokenized set's ids come from its world's vocabulary, built from
        that world's noisy captions). Nothing outside a study of several generated worlds."""
        root = layout.shared_tree(cmgh_config.resolve_path(self.cfg.worlds.root))
        if len(self.worlds) < 2 or self.cfg.data.source != "synth":
            return worlds.SharedSets(root)
        study = self.cfg.to_dict()
        trees = [worlds.tree_config(study, setting, root.parent) for setting in self.worlds]

        def same_everywhere(name: str) -> bool:
            sections = datasets.get(name).synth_sections
            return len({json.dumps(identity.synth_inputs(tree, name, sections), sort_keys=True) for tree in trees}) == 1

        data = tuple(name for name in self.cfg.data.datasets if same_everywhere(name))
        return worlds.SharedSets(root, data, tuple(name for name in data if name not in TOKENIZED))

    # ----------------------------------------------------------------------- report, studies

    @functools.cached_property
    def scaling_pairs(self) -> list[Any]:
        """Variants that differ only by YouTube-8M added to `pretrain.corpora` (config/scaling.yaml), paired
        as the report pairs them (cmgh.report.scaling.pairs); with any, the report writes the gain from adding it."""
        from cmgh.report.scaling import pairs

        return pairs({v: self.variant_config(v).to_dict() for v in self.variants})

    @property
    def sweep_task(self) -> str:
        """The task whose validation split a sweep's trials are scored on (`sweep.objective`)."""
        return VALIDATION_METRICS[self.cfg.sweep.objective][0]

    def sweep_workers(self) -> list[int]:
        """The worker jobs of a study: none when `sweep.workers` is 1 (rule sweep runs every trial)."""
        workers = int(self.cfg.sweep.workers)
        return list(range(workers)) if workers > 1 else []

    @property
    def worker_trials(self) -> int:
        """Trials each worker job runs (rule sweep tops the study up to `sweep.n_trials`)."""
        return max(1, int(self.cfg.sweep.n_trials) // int(self.cfg.sweep.workers))

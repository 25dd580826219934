"""What every tracked run records about where it came from: config hash, code version, data version.

Import-light (no mlflow): the hash and the tags are plain strings the adapter stores as tags (the
datasets a run reads are :class:`cmgh.tracking.DatasetRef` values the core hands the tracker).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from cmgh import __version__, layout
from cmgh.config import corpora, corpus_format
from cmgh.identity import run_identity
from cmgh.io import json_digest
from cmgh.tracking import file_hash

RULE_ENV_VARS = ("CMGH_RULE", "SNAKEMAKE_RULE")


def config_hash(cfg: Any, stage: str) -> str:
    """Short hash of what a run of ``stage`` computes from (:func:`cmgh.identity.run_identity`)."""
    identity = run_identity(cfg, stage)
    return json_digest(identity, 12)


def manifest_tag(dataset: str) -> str:
    """Tag of a corpus manifest's hash: ``manifest_sha256`` for HowTo100M (the name runs have always
    carried), ``manifest_sha256.<dataset>`` for any other corpus."""
    return "manifest_sha256" if dataset == "howto100m" else f"manifest_sha256.{dataset}"


def manifest_tags(cfg: Any) -> dict[str, str]:
    """The hash of the feature manifest of every dataset a pre-training run reads (its corpus)."""
    return {
        manifest_tag(name): file_hash(layout.corpus_dir(cfg.path("features"), name, corpus_format(cfg, name)) / layout.FEATURE_MANIFEST)
        for name, _ in corpora(cfg.to_dict()["pretrain"])
    }


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` of the project ``cwd`` (default: the working directory, the
    project cmgh runs in and writes to; never the folder the package was imported from, which a shared
    venv or an installed wheel puts elsewhere). Empty when git or the repository is missing."""
    where = str(cwd or Path.cwd())

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain")
    state = {"git_commit": commit, "mlflow.source.git.commit": commit}
    if status is not None:
        state["git_dirty"] = "true" if status else "false"
    return state


def provenance_tags(cfg: Any, stage: str) -> dict[str, str]:
    """Tags every cmgh run carries: stage, config hash, code version (the project's commit and the
    package's version), data version, noise rates, workflow rule."""
    tags = {
        **git_state(),
        "cmgh.version": __version__,
        "stage": stage,
        "cmgh.config_hash": config_hash(cfg, stage),
        "noise_audio_rate": str(cfg.data.noise.audio_rate),
        "noise_text_rate": str(cfg.data.noise.text_rate),
        "data_source": str(cfg.data.source),
        **manifest_tags(cfg),
        "mlflow.source.name": "cmgh",
    }
    for var in RULE_ENV_VARS:
        if os.environ.get(var):
            tags["snakemake_rule"] = os.environ[var]
            break
    return tags

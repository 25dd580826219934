"""Data: the five datasets' real formats, the mini-world generator, media decoding and features.

Kept import-free so that ``import cmgh.data.formats`` does not pull in PyAV or torch, and so that
the CLI can name the datasets without importing pandas. ``DATASETS`` (the dataset names, in the
order that seeds each dataset's random stream) is the schema's ``data.datasets`` enum, read on
first use and then kept, so every importer holds the same tuple.
"""

from __future__ import annotations

from typing import Any

# Pre-training corpora with timed captions: each window takes the captions nearest it (MIL-NCE
# positives); a video without captions gives windows without text (video-audio pairs).
CAPTIONED = ("howto100m", "youtube8m")
# Datasets whose text is tokenized at extraction, all with the one vocabulary built from
# HowTo100M's captions (features.build_vocab): YouTube-8M's words outside it become <unk>.
TOKENIZED = ("howto100m", "msrvtt", "youtube8m")
# Pre-training corpora whose generator writes a noise ground truth (noise_labels.csv): what the
# workflow plans noise detection over training for before any file exists (at run time the file
# decides, cmgh.evaluate.noise_truth.labelled_corpora).
NOISE_TRUTH = ("howto100m", "youtube8m")


def __getattr__(name: str) -> Any:
    if name == "DATASETS":
        from cmgh.config import choices

        names: tuple[str, ...] = choices("data.datasets")
        globals()["DATASETS"] = names
        return names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The generator's plans: what the generator makes of a dataset (its annotation tables and the
clips to render), and the helpers every dataset's plan (``cmgh.data.datasets.<name>.plan_<name>``) shares.

Every dataset is drawn from the same latent concepts (:mod:`cmgh.data.datasets.concepts`), so pre-training
on the HowTo100M-like corpus transfers to the Kinetics-, AudioSet- and MSR-VTT-like tasks.

Determinism: each dataset has its own random stream (``[seed, stream]``, ``stream`` its place in
the registry, :attr:`SynthSettings.stream`) for dataset-wide choices
(concept balance, which triplets are noisy) and each item its own (``[seed, dataset, split, i]``,
media rendering ``[..., 1]``). So the same seed gives the same annotation bytes and the same media
bytes whatever the worker count, and resizing one dataset (or one split) leaves the others
untouched. A plan only describes; :mod:`cmgh.data.synth.generate` renders and writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cmgh.config import Config
from cmgh.data.datasets.concepts import Concept, build_concepts, render_audio, render_video
from cmgh.errors import DataError

ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


@dataclass(frozen=True)
class Segment:
    """A stretch of one media file: what it shows and what it sounds like."""

    seconds: float
    video: tuple[int, ...]  # concept indices drawn in the frames
    audio: tuple[int, ...]  # concept indices heard (differs from ``video`` for misaligned triplets)


@dataclass(frozen=True)
class Job:
    """One media file to render; carries its own rng key so workers need no shared state."""

    path: str
    key: tuple[int, ...]
    segments: tuple[Segment, ...]
    media: tuple[int, int, int, int, str]  # fps, width, height, sample_rate, video_codec
    concepts: tuple[int, int]  # (number, seed) to rebuild the concepts in a worker


@dataclass
class Plan:
    """Everything about one dataset except the media bytes: annotation writers and render jobs."""

    name: str
    root: Path
    jobs: list[Job] = field(default_factory=list)
    writers: list[tuple[Any, ...]] = field(default_factory=list)  # (function, path, *args): function(path, *args) writes path

    def outputs(self) -> list[Path]:
        """Every file the plan writes (clips, then annotation files), known before any is written."""
        return [Path(job.path) for job in self.jobs] + [Path(path) for _, path, *_ in self.writers]


def written(path: Path, writer: Any, *args: Any) -> Path:
    """``writer(*args)``, which writes ``path``: a plan entry for a writer that takes its folder, not its file."""
    return writer(*args)


# --------------------------------------------------------------------------------------------
# helpers


def youtube_id(rng: np.random.Generator) -> str:
    """11 characters like a YouTube ID, first one alphanumeric (never '-': IDs must be path-safe)."""
    first = ID_ALPHABET[rng.integers(62)]
    rest = ID_ALPHABET[rng.integers(64, size=10)]
    return first + "".join(rest)


def item_rng(seed: int, stream: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, split, index])


def media_key(seed: int, stream: int, split: int, index: int) -> tuple[int, ...]:
    return (seed, stream, split, index, 1)


def check_unique(ids: Sequence[str], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise DataError(f"generator produced duplicate {what}s; change data.synth.seed")


def balanced(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """``n`` concept indices covering all classes as evenly as possible, in random order."""
    return rng.permutation(np.resize(np.arange(classes), n))


def cyclic(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """Balanced concept indices whose first ``k`` entries do not depend on ``n`` (a shuffled cycle).

    Growing a split then only appends items: the existing ones keep their concept.
    """
    order = rng.permutation(classes)
    return order[np.arange(n) % classes]


def exact_fraction(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """A boolean mask with exactly ``round(rate * n)`` True entries at random positions."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(rate * n))]] = True
    return mask


def other_concepts(rng: np.random.Generator, concepts: np.ndarray, classes: int) -> np.ndarray:
    """For each concept, a different one drawn uniformly from the rest."""
    return (concepts + rng.integers(1, classes, size=len(concepts))) % classes


@lru_cache(maxsize=4)
def concept_set(number: int, seed: int) -> tuple[Concept, ...]:
    return tuple(build_concepts(number, seed))


def render_job(job: Job) -> str:
    """Render and encode one clip (runs in a worker process)."""
    from cmgh.data.io import encode  # PyAV only where media are made

    concepts = concept_set(*job.concepts)
    fps, width, height, rate, codec = job.media
    rng = np.random.default_rng(list(job.key))
    frames, audio = [], []
    for seg in job.segments:
        frames.append(render_video([concepts[c] for c in seg.video], rng, seg.seconds, fps, width, height))
        audio.append(render_audio([concepts[c] for c in seg.audio], rng, seg.seconds, rate))
    encode.write_mp4(job.path, np.concatenate(frames), fps, np.concatenate(audio), rate, codec)
    return job.path


@dataclass(frozen=True)
class SynthSettings:
    """What one dataset's generator plan reads from the config, read once (:meth:`of`): the plan
    takes these, not the config."""

    seed: int
    stream: int  # the dataset's place in the registry (:func:`cmgh.data.datasets.stream_index`): keys its random streams
    concepts: int
    media: tuple[int, int, int, int, str]  # fps, width, height, sample_rate, video_codec
    own: Config  # data.synth.<dataset>: the dataset's own sizes and rates (empty when it has none)
    sections: Mapping[str, Config]  # data.<section> for each of the dataset's ``synth_sections``

    @classmethod
    def of(cls, cfg: Config, name: str, stream: int, sections: Sequence[str] = ()) -> SynthSettings:
        synth, m = cfg.data.synth, cfg.data.synth.media
        return cls(
            seed=int(synth.seed),
            stream=stream,
            concepts=int(synth.concepts),
            media=(int(m.fps), int(m.width), int(m.height), int(m.sample_rate), str(m.video_codec)),
            own=synth[name] if name in synth else Config({}, f"data.synth.{name}."),
            sections={section: cfg.data[section] for section in sections},
        )

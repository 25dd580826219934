"""What the generator makes of each dataset: its annotation tables and the clips to render.

Every dataset is drawn from the same latent concepts (:mod:`cmgh.data.synth.concepts`), so pre-training
on the HowTo100M-like corpus transfers to the Kinetics-, AudioSet- and MSR-VTT-like tasks.

Determinism: each dataset has its own random stream (``[seed, dataset]``) for dataset-wide choices
(concept balance, which triplets are noisy) and each item its own (``[seed, dataset, split, i]``,
media rendering ``[..., 1]``). So the same seed gives the same annotation bytes and the same media
bytes whatever the worker count, and resizing one dataset (or one split) leaves the others
untouched. A plan only describes; :mod:`cmgh.data.synth.generate` renders and writes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data import DATASETS, formats
from cmgh.data.synth.concepts import Concept, build_concepts, make_caption, render_audio, render_video
from cmgh.errors import DataError

DATASET_INDEX = {name: i for i, name in enumerate(DATASETS)}  # keys each dataset's random stream
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
HOWTO_CATEGORIES = (
    ("Food and Entertaining", "Recipes"),
    ("Hobbies and Crafts", "Crafts"),
    ("Home and Garden", "Gardening"),
    ("Cars & Other Vehicles", "Car Maintenance"),
    ("Sports and Fitness", "Outdoor Recreation"),
    ("Pets and Animals", "Dogs"),
)


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


def item_rng(seed: int, dataset: str, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, DATASET_INDEX[dataset], split, index])


def media_key(seed: int, dataset: str, split: int, index: int) -> tuple[int, ...]:
    return (seed, DATASET_INDEX[dataset], split, index, 1)


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


def media_settings(cfg: Any) -> tuple[int, int, int, int, str]:
    m = cfg.data.synth.media
    return int(m.fps), int(m.width), int(m.height), int(m.sample_rate), str(m.video_codec)


# --------------------------------------------------------------------------------------------
# four of the datasets (YouTube-8M: cmgh.data.synth.youtube8m)


def plan_howto100m(cfg: Any, root: Path) -> Plan:
    """Videos of consecutive triplet segments, ASR-like captions, and the noise ground truth."""
    synth, noise = cfg.data.synth, cfg.data.noise
    seed, n_concepts = int(synth.seed), int(synth.concepts)
    spec = synth.howto100m
    n, per, seg_len, cps = int(spec.videos), int(spec.segments_per_video), float(spec.segment_seconds), int(spec.captions_per_segment)
    total = n * per
    drng = np.random.default_rng([seed, DATASET_INDEX["howto100m"]])
    visual = balanced(drng, total, n_concepts)
    audio_bad = exact_fraction(drng, total, float(noise.audio_rate))
    text_bad = exact_fraction(drng, total, float(noise.text_rate))
    audio_c = np.where(audio_bad, other_concepts(drng, visual, n_concepts), visual)
    text_c = np.where(text_bad, other_concepts(drng, visual, n_concepts), visual)
    concepts = concept_set(n_concepts, seed)
    shift = float(noise.caption_shift_seconds)
    plan = Plan("howto100m", root)
    videos, captions, labels = [], {}, []
    for i in range(n):
        rng = item_rng(seed, "howto100m", 0, i)
        vid = youtube_id(rng)
        cat1, cat2 = HOWTO_CATEGORIES[int(rng.integers(len(HOWTO_CATEGORIES)))]
        videos.append((vid, cat1, cat2, int(rng.integers(1, 200)), int(rng.integers(10000, 200000))))
        starts, ends, texts = [], [], []
        segments = []
        for j in range(per):
            s = i * per + j
            lo = j * seg_len
            edges = lo + seg_len * np.arange(cps + 1) / cps
            jitter = rng.uniform(-shift, shift, size=(cps, 2))
            for k in range(cps):
                a = min(max(0.0, edges[k] + jitter[k, 0]), per * seg_len - 0.1)
                b = min(max(a + 0.1, edges[k + 1] + jitter[k, 1]), per * seg_len)
                starts.append(round(a, 2))
                ends.append(round(b, 2))
                texts.append(make_caption(concepts[int(text_c[s])], rng, "asr"))
            segments.append(Segment(seg_len, (int(visual[s]),), (int(audio_c[s]),)))
            labels.append((vid, lo, lo + seg_len, int(not audio_bad[s]), int(not text_bad[s])))
        captions[vid] = {"start": starts, "end": ends, "text": texts}
        plan.jobs.append(
            Job(str(layout.video_file(root, vid)), media_key(seed, "howto100m", 0, i), tuple(segments), media_settings(cfg), (n_concepts, seed))
        )
    check_unique([v[0] for v in videos], "video_id")
    plan.writers += [
        (formats.write_howto100m_videos, root / layout.HOWTO100M_VIDEOS, pd.DataFrame(videos, columns=list(formats.HOWTO_VIDEO_COLUMNS))),
        (formats.write_howto100m_captions, root / layout.HOWTO100M_CAPTIONS, captions),
        (formats.write_noise_labels, root / layout.NOISE_LABELS, pd.DataFrame(labels, columns=list(formats.NOISE_COLUMNS))),
    ]
    return plan


def plan_kinetics(cfg: Any, root: Path) -> Plan:
    """``classes`` action classes = the first concepts, each with train/val/test clips."""
    synth = cfg.data.synth
    seed, n_concepts, spec = int(synth.seed), int(synth.concepts), synth.kinetics
    concepts = concept_set(n_concepts, seed)
    classes, seconds = int(spec.classes), float(spec.clip_seconds)
    window = max(1, int(round(seconds)))
    counts = {"train": int(spec.train_per_class), "val": int(spec.val_per_class), "test": int(spec.test_per_class)}
    plan = Plan("kinetics", root)
    all_ids: list[str] = []
    for split_index, (split, per_class) in enumerate(counts.items()):
        rows = []
        for i in range(classes * per_class):
            c = i // per_class
            rng = item_rng(seed, "kinetics", split_index, i)
            ytid = youtube_id(rng)
            start = int(rng.integers(0, 290))
            row = {"label": concepts[c].name, "youtube_id": ytid, "time_start": start, "time_end": start + window, "split": split}
            rows.append(row)
            plan.jobs.append(
                Job(
                    str(formats.kinetics_clip_path(root, row)),
                    media_key(seed, "kinetics", split_index, i),
                    (Segment(seconds, (c,), (c,)),),
                    media_settings(cfg),
                    (n_concepts, seed),
                )
            )
        all_ids += [r["youtube_id"] for r in rows]
        table = pd.DataFrame(rows, columns=list(formats.KINETICS_COLUMNS))
        plan.writers.append((formats.write_kinetics, root / layout.KINETICS_ANNOTATIONS_DIR / layout.KINETICS_SPLIT_FILES[split], table))
    check_unique(all_ids, "youtube_id")
    return plan


def audioset_classes(concepts: Sequence[Concept], seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One MID per concept plus group labels shared by several concepts; returns (table, group of concept)."""
    rng = np.random.default_rng([seed, DATASET_INDEX["audioset"], 99])
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyz"))
    groups = max(1, math.ceil(len(concepts) / 3))
    group_of = np.arange(len(concepts)) % groups
    mids: list[str] = []
    while len(mids) < len(concepts):
        mid = "/m/0" + "".join(alphabet[rng.integers(36, size=4)])
        if mid not in mids:
            mids.append(mid)
    names = [c.name.capitalize() for c in concepts]
    for g in range(groups):
        mids.append(f"/t/dd{g + 1:05d}")
        names.append(f"{concepts[g].words[2].capitalize()} sounds, family {g + 1}")
    table = pd.DataFrame({"index": np.arange(len(mids)), "mid": mids, "display_name": names})
    return table, group_of


def plan_audioset(cfg: Any, root: Path) -> Plan:
    """Multi-label clips: 1..max_sources concepts mixed (summed audio, all drawn in the video)."""
    synth = cfg.data.synth
    seed, n_concepts, spec = int(synth.seed), int(synth.concepts), synth.audioset
    concepts = concept_set(n_concepts, seed)
    classes, group_of = audioset_classes(concepts, seed)
    mids = classes["mid"].tolist()
    seconds, max_sources = float(spec.clip_seconds), min(int(spec.max_sources), n_concepts)
    plan = Plan("audioset", root)
    plan.writers.append((formats.write_audioset_classes, root / layout.AUDIOSET_CLASSES, classes))
    all_ids: list[str] = []
    for split_index, (filename, count) in enumerate(((layout.AUDIOSET_SEGMENT_FILES["train"], int(spec.train)), (layout.AUDIOSET_SEGMENT_FILES["eval"], int(spec.eval)))):
        drng = np.random.default_rng([seed, DATASET_INDEX["audioset"], split_index])
        primary = cyclic(drng, count, n_concepts)
        rows = []
        for i in range(count):
            rng = item_rng(seed, "audioset", split_index, i)
            ytid = youtube_id(rng)
            start = float(10 * rng.integers(0, 30))
            k = int(rng.integers(1, max_sources + 1))
            others = rng.permutation(np.setdiff1d(np.arange(n_concepts), [primary[i]]))[: k - 1]
            sources = tuple(sorted(int(c) for c in [primary[i], *others]))
            label_idx = sorted(set(sources) | {n_concepts + int(group_of[c]) for c in sources})
            row = {"YTID": ytid, "start_seconds": start, "end_seconds": start + seconds, "positive_labels": [mids[j] for j in label_idx]}
            rows.append(row)
            plan.jobs.append(
                Job(
                    str(layout.audioset_clip(root, ytid, int(start))),
                    media_key(seed, "audioset", split_index, i),
                    (Segment(seconds, sources, sources),),
                    media_settings(cfg),
                    (n_concepts, seed),
                )
            )
        all_ids += [f"{r['YTID']}_{int(r['start_seconds'])}" for r in rows]
        plan.writers.append((formats.write_audioset_segments, root / filename, pd.DataFrame(rows, columns=list(formats.AUDIOSET_COLUMNS))))
    check_unique(all_ids, "YTID")
    return plan


def plan_msrvtt(cfg: Any, root: Path) -> Plan:
    """One concept per video, several varied descriptions each, and the 1k-A style test list."""
    synth = cfg.data.synth
    seed, n_concepts, spec = int(synth.seed), int(synth.concepts), synth.msrvtt
    concepts = concept_set(n_concepts, seed)
    seconds, per_video = float(spec.clip_seconds), int(spec.captions_per_video)
    plan = Plan("msrvtt", root)
    videos, sentences, test_rows = [], [], []
    offset = 0
    for split_index, (split, count) in enumerate((("train", int(spec.train)), ("validate", int(spec.val)), ("test", int(spec.test)))):
        drng = np.random.default_rng([seed, DATASET_INDEX["msrvtt"], split_index])
        assigned = cyclic(drng, count, n_concepts)
        for i in range(count):
            number = offset + i
            c = int(assigned[i])
            rng = item_rng(seed, "msrvtt", split_index, i)
            ytid = youtube_id(rng)
            start = round(float(rng.uniform(0.0, 300.0)), 2)
            video_id = f"video{number}"
            videos.append((video_id, c % 20, f"https://www.youtube.com/watch?v={ytid}", start, round(start + seconds, 2), split, number))
            texts: list[str] = []
            for _ in range(per_video):
                text = make_caption(concepts[c], rng, "describe")
                for _retry in range(8):  # prefer distinct captions per video, like real annotators
                    if text not in texts:
                        break
                    text = make_caption(concepts[c], rng, "describe")
                texts.append(text)
            sentences += [(t, video_id) for t in texts]
            if split == "test":
                test_rows.append((f"ret{len(test_rows)}", f"msr{number}", video_id, texts[0]))
            plan.jobs.append(
                Job(
                    str(layout.video_file(root, video_id)),
                    media_key(seed, "msrvtt", split_index, i),
                    (Segment(seconds, (c,), (c,)),),
                    media_settings(cfg),
                    (n_concepts, seed),
                )
            )
        offset += count
    vdf = pd.DataFrame(videos, columns=list(formats.MSRVTT_VIDEO_COLUMNS))
    sdf = pd.DataFrame([(t, v, k) for k, (t, v) in enumerate(sentences)], columns=list(formats.MSRVTT_SENTENCE_COLUMNS))
    plan.writers += [
        (formats.write_msrvtt_info, root / layout.MSRVTT_INFO, vdf, sdf),
        (formats.write_msrvtt_test, root / layout.MSRVTT_TEST, pd.DataFrame(test_rows, columns=list(formats.MSRVTT_TEST_COLUMNS))),
    ]
    return plan


PLANNERS = {"howto100m": plan_howto100m, "kinetics": plan_kinetics, "audioset": plan_audioset, "msrvtt": plan_msrvtt}

"""HowTo100M: the narrated pre-training corpus (video, audio and ASR captions), in its real layout.

``HowTo100M_v1.csv`` (the video list), ``caption.json`` (:mod:`cmgh.data.datasets.caption_json`),
``videos/<video_id>.mp4``; the generator also writes ``noise_labels.csv`` (the ground truth of
which triplets it misaligned, :mod:`cmgh.data.datasets.noise_labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.datasets import AnnotationCheck, DatasetSpec, Packing
from cmgh.data.datasets.caption_json import read_howto100m_captions, write_howto100m_captions
from cmgh.data.datasets.items import Item, WindowSpec, caption_tracks, id_status, line_of, windows
from cmgh.data.datasets.noise_labels import NOISE_COLUMNS, write_noise_labels
from cmgh.data.datasets.packing import PackItem, caption_tuples, member_key, unpackable
from cmgh.data.datasets.download_list import Clip, clip_target
from cmgh.data.io.tables import LINE, as_int, as_text, keep, parse_csv, read_text, write_csv
from cmgh.data.datasets.concepts import make_caption
from cmgh.data.datasets.generator import Job, Plan, Segment, SynthSettings, balanced, check_unique, concept_set, exact_fraction, item_rng, media_key, other_concepts, youtube_id
from cmgh.io import safe_id
from cmgh.layout import PathLike

HOWTO_VIDEO_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")


HOWTO_CATEGORIES = (
    ("Food and Entertaining", "Recipes"),
    ("Hobbies and Crafts", "Crafts"),
    ("Home and Garden", "Gardening"),
    ("Cars & Other Vehicles", "Car Maintenance"),
    ("Sports and Fitness", "Outdoor Recreation"),
    ("Pets and Animals", "Dogs"),
)


# --------------------------------------------------------------------------------------------
# annotation files


def write_howto100m_videos(path: PathLike, table: pd.DataFrame) -> Path:
    return write_csv(path, HOWTO_VIDEO_COLUMNS, table[list(HOWTO_VIDEO_COLUMNS)].itertuples(index=False))


def read_howto100m_videos(path: PathLike, lines: bool = False) -> pd.DataFrame:
    """``HowTo100M_v1.csv``: one row per video (``rank``/``task_id`` integers; ``lines``: and each row's line number)."""
    path, text = read_text(path, f"HowTo100M video list ({layout.HOWTO100M_VIDEOS})")
    parsers = {"video_id": as_text, "category_1": keep, "category_2": keep, "rank": as_int, "task_id": as_int}
    return parse_csv(path, text, HOWTO_VIDEO_COLUMNS, parsers, lines=lines)


# --------------------------------------------------------------------------------------------
# items


def howto100m_videos(root: Path) -> list[tuple[str, str | None]]:
    """The ids of ``HowTo100M_v1.csv`` in order, each with None or its :func:`id_status`."""
    path = root / layout.HOWTO100M_VIDEOS
    videos = read_howto100m_videos(path, lines=True)
    return [(vid, id_status(vid, "video_id", line_of(root, path, n))) for vid, n in zip(videos["video_id"], videos[LINE], strict=True)]


def howto100m_items(root: Path, spec: WindowSpec) -> list[Item]:
    """Non-overlapping clips from the start of each video, each with its nearest captions."""
    tracks, empty = caption_tracks(root / layout.HOWTO100M_CAPTIONS)
    length = spec.seconds
    items: list[Item] = []
    for video_id, status in howto100m_videos(root):
        if status is not None:
            items.append(Item(video_id, root / layout.HOWTO100M_VIDEOS, None, status=status))
            continue
        track = tracks.get(video_id, empty)
        # Clips must overlap the narrated part of the video: the last caption bounds it.
        horizon = float(track["end"].max()) if not track.empty else length
        items += windows(video_id, layout.video_file(root, safe_id(video_id, "video_id")), track, spec, {}, horizon)
    return items


def pretrain_texts(root: Path) -> list[str]:
    """Every caption of HowTo100M (``root``): the one vocabulary of every run is built from these
    only, whichever corpora a run mixes (YouTube-8M's and MSR-VTT's text reuse it)."""
    return read_howto100m_captions(root / layout.HOWTO100M_CAPTIONS)["text"].astype(str).tolist()


# --------------------------------------------------------------------------------------------
# generator plan


def plan_howto100m(settings: SynthSettings, root: Path) -> Plan:
    """Videos of consecutive triplet segments, ASR-like captions, and the noise ground truth (``data.noise``)."""
    seed, n_concepts, spec, noise = settings.seed, settings.concepts, settings.own, settings.sections["noise"]
    n, per, seg_len, cps = int(spec.videos), int(spec.segments_per_video), float(spec.segment_seconds), int(spec.captions_per_segment)
    total = n * per
    drng = np.random.default_rng([seed, settings.stream])
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
        rng = item_rng(seed, settings.stream, 0, i)
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
            Job(str(layout.video_file(root, vid)), media_key(seed, settings.stream, 0, i), tuple(segments), settings.media, (n_concepts, seed))
        )
    check_unique([v[0] for v in videos], "video_id")
    plan.writers += [
        (write_howto100m_videos, root / layout.HOWTO100M_VIDEOS, pd.DataFrame(videos, columns=list(HOWTO_VIDEO_COLUMNS))),
        (write_howto100m_captions, root / layout.HOWTO100M_CAPTIONS, captions),
        (write_noise_labels, root / layout.NOISE_LABELS, pd.DataFrame(labels, columns=list(NOISE_COLUMNS))),
    ]
    return plan


# --------------------------------------------------------------------------------------------
# download


def download_clips(root: Path) -> list[Clip]:
    videos = read_howto100m_videos(root / layout.HOWTO100M_VIDEOS)
    clips = []
    for row in videos.itertuples(index=False):
        target, error = clip_target(lambda safe: layout.video_file(root, safe), "video_id", row.video_id)
        clips.append(Clip(row.video_id, "all", (row.category_1, row.category_2), row.video_id, target, error=error))
    return clips


def pack_items(root: Path) -> list[PackItem]:
    """One item per video of the list, with its captions."""
    tracks = caption_tuples(root / layout.HOWTO100M_CAPTIONS)
    planned = []
    for video_id, status in howto100m_videos(root):
        if status is not None:
            planned.append(unpackable(video_id, root / layout.HOWTO100M_VIDEOS, root, status))
            continue
        source = layout.video_file(root, safe_id(video_id, "video_id"))
        planned.append(PackItem(video_id, member_key(video_id), source, video_id, os.path.relpath(source, root),
                                {"video_id": video_id}, tracks.get(video_id, ())))
    return planned


SPEC = DatasetSpec(
    name="howto100m",
    annotations=(layout.HOWTO100M_VIDEOS, layout.HOWTO100M_CAPTIONS),
    items=howto100m_items,
    plan=plan_howto100m,
    clips=download_clips,
    checks=(
        AnnotationCheck(layout.HOWTO100M_VIDEOS, read_howto100m_videos, f"the HowTo100M video list (header {','.join(HOWTO_VIDEO_COLUMNS)})"),
        AnnotationCheck(layout.HOWTO100M_CAPTIONS, read_howto100m_captions, "HowTo100M's caption.json (video_id -> start, end, text lists)"),
    ),
    classes_help="HowTo100M category_1 or category_2 values",
    captioned=True,
    tokenized=True,
    noise_truth=True,
    packing=Packing(pack_items, ("video_id",)),
    pack_required=(layout.HOWTO100M_VIDEOS, layout.HOWTO100M_CAPTIONS),
    synth_sections=("noise",),
    vocabulary=pretrain_texts,
)

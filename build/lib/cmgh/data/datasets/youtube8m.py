"""YouTube-8M: a non-narrative pre-training corpus, in the dataset's real layout.

The records, vocabulary and pseudo-id lookup are read and written by
:mod:`cmgh.data.datasets.youtube8m_format`; videos live under ``videos/<youtube_id>.mp4`` and their
automatic captions, converted to HowTo100M's layout, in ``caption.json`` (a video may have none).

What the generator makes of it: videos longer than HowTo100M's (several scenes of one or two
concepts) whose text is what YouTube's automatic captions of such videos are: mostly about
something else than the picture (``text_rate`` of the scenes, default high), and missing
altogether for a fraction of the videos (``uncaptioned_rate``: those are video-audio pairs).
``audio_rate`` of the scenes sound like another concept (background music, voice-over). The records
carry 4-character pseudo ids (2018 release) and the lookup answers map them to the YouTube ids the
videos are stored under. The ground truth goes to the dataset's own ``noise_labels.csv``; a scene
of a video without captions counts as text-aligned (there is no text to be wrong).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data.datasets import AnnotationCheck, DatasetSpec, Packing
from cmgh.data.datasets import youtube8m_format as yt8m
from cmgh.data.datasets.caption_json import write_howto100m_captions
from cmgh.data.datasets.items import Item, WindowSpec, caption_tracks, id_status, windows
from cmgh.data.datasets.noise_labels import NOISE_COLUMNS, write_noise_labels
from cmgh.data.datasets.packing import PackItem, caption_tuples, member_key, unpackable
from cmgh.data.datasets.download_list import Clip, clip_target
from cmgh.data.datasets.concepts import make_caption
from cmgh.data.datasets.generator import (
    ID_ALPHABET,
    Job,
    Plan,
    Segment,
    SynthSettings,
    balanced,
    check_unique,
    concept_set,
    exact_fraction,
    item_rng,
    media_key,
    other_concepts,
    written,
    youtube_id,
)
from cmgh.errors import ConfigError
from cmgh.io import safe_id

VERTICALS = ("Arts & Entertainment", "Games", "Autos & Vehicles", "Sports", "Food & Drink", "Pets & Animals", "Hobbies & Leisure", "Science")


VALIDATE_EVERY = 8  # every 8th video goes to the validate records


log = logging.getLogger(__name__)
NAME = "youtube8m"


# --------------------------------------------------------------------------------------------
# items


def youtube8m_status(root: Path, row: Any) -> str | None:
    """A video of :func:`yt8m.read_videos` that cannot be extracted: an unsafe record (pseudo) id, no
    YouTube id, or an unsafe one."""
    where = os.path.relpath(layout.youtube8m_record_file(root, row.record), root)
    if not row.youtube_id:
        return id_status(row.record_id, "pseudo id", where) or yt8m.NO_YOUTUBE_ID  # '../x' was never looked up: invalid
    return id_status(row.youtube_id, "youtube_id", where)


def youtube8m_items(root: Path, spec: WindowSpec) -> list[Item]:
    """Windows of every video of the records (all splits: pre-training uses them all) as for
    HowTo100M, but over the whole video, not the captioned part (the corpus is non-narrative): a
    video without automatic captions gives windows without text (video-audio pairs). A record whose
    pseudo id has no YouTube id (or an unsafe one) is one item with its :func:`youtube8m_status`."""
    videos = yt8m.read_videos(root)
    tracks, empty = caption_tracks(root / layout.YOUTUBE8M_CAPTIONS)
    vocabulary = root / layout.YOUTUBE8M_VOCABULARY
    known = set(yt8m.read_vocabulary(vocabulary)["Index"].astype(int)) if vocabulary.is_file() else None
    items: list[Item] = []
    dropped: list[str] = []
    for row in videos.itertuples(index=False):
        status = youtube8m_status(root, row)
        if status is not None:
            items.append(Item(row.youtube_id or row.record_id, layout.youtube8m_record_file(root, row.record), None, status=status))
            continue
        source = layout.video_file(root, safe_id(row.youtube_id, "youtube_id"))
        labels = [int(v) for v in row.labels]
        if known is not None and any(v not in known for v in labels):  # an index vocabulary.csv does not have: never stored
            dropped += [f"{row.record} {row.record_id}: {v}" for v in labels if v not in known]
            labels = [v for v in labels if v in known]
        meta = {"record_id": row.record_id, "labels": labels}
        items += windows(row.youtube_id, source, tracks.get(row.youtube_id, empty), spec, meta, None)
    if dropped:
        log.warning("%s: %d labels are not in %s (e.g. %s): dropped from their videos", root, len(dropped), layout.YOUTUBE8M_VOCABULARY, "; ".join(dropped[:3]))
    return items


# --------------------------------------------------------------------------------------------
# generator plan


def pseudo_id(rng: np.random.Generator) -> str:
    """4 alphanumeric characters, like the 2018 release's ids."""
    return "".join(ID_ALPHABET[rng.integers(62, size=4)])


def vocabulary(concepts: Any, classes: int, train_counts: np.ndarray, seed: int, stream: int) -> pd.DataFrame:
    """One class per concept, then broader classes grouping concepts (``vocabulary.csv``)."""
    rng = np.random.default_rng([seed, stream, 99])
    rows = []
    for index in range(classes):
        concept = concepts[index % len(concepts)]
        name = concept.name.title() if index < len(concepts) else f"{concept.words[1].title()} (genre {index - len(concepts) + 1})"
        kg = "/m/0" + "".join(ID_ALPHABET[rng.integers(26, 36, size=4)]).lower()
        rows.append({
            "Index": index, "TrainVideoCount": int(train_counts[index]), "KnowledgeGraphId": kg, "Name": name,
            "WikiUrl": f"https://en.wikipedia.org/wiki/{name.replace(' ', '_')}",
            "Vertical1": VERTICALS[index % len(VERTICALS)], "Vertical2": "", "Vertical3": "",
            "WikiDescription": f"{name} is known for {concept.words[0]} and {concept.words[2]}.",
        })
    return pd.DataFrame(rows, columns=list(yt8m.VOCABULARY_COLUMNS))


def labels_of(scene_concepts: np.ndarray, n_concepts: int, classes: int) -> list[int]:
    """A video's labels: the concepts it shows and the broader classes they fall in."""
    extra = classes - n_concepts
    labels = {int(c) for c in scene_concepts}
    if extra > 0:
        labels |= {n_concepts + int(c) % extra for c in scene_concepts}
    return sorted(labels)


def plan_youtube8m(settings: SynthSettings, root: Path) -> Plan:
    seed, n_concepts, spec = settings.seed, settings.concepts, settings.own
    n, per, seg_len, cps = int(spec.videos), int(spec.segments_per_video), float(spec.segment_seconds), int(spec.captions_per_segment)
    classes = max(int(spec.classes), n_concepts)
    concepts = concept_set(n_concepts, seed)
    drng = np.random.default_rng([seed, settings.stream])
    # A video is about one topic, half of them about a second one too (every other scene).
    primary = balanced(drng, n, n_concepts)
    secondary = np.where(exact_fraction(drng, n, 0.5), other_concepts(drng, primary, n_concepts), primary)
    visual = np.where(np.arange(n * per) % 2 == 1, np.repeat(secondary, per), np.repeat(primary, per))
    audio_bad = exact_fraction(drng, n * per, float(spec.audio_rate))
    uncaptioned = exact_fraction(drng, n, float(spec.uncaptioned_rate))
    captioned_scenes = np.flatnonzero(np.repeat(~uncaptioned, per))
    text_bad = np.zeros(n * per, dtype=bool)
    text_bad[captioned_scenes[exact_fraction(drng, len(captioned_scenes), float(spec.text_rate))]] = True
    audio_c = np.where(audio_bad, other_concepts(drng, visual, n_concepts), visual)
    text_c = np.where(text_bad, other_concepts(drng, visual, n_concepts), visual)

    plan = Plan(NAME, root)
    captions: dict[str, dict[str, list[Any]]] = {}
    noise, records = [], {}
    pseudo_ids, youtube_ids = [], []
    train_counts = np.zeros(classes, dtype=np.int64)
    for i in range(n):
        rng = item_rng(seed, settings.stream, 0, i)
        pid, ytid = pseudo_id(rng), youtube_id(rng)
        pseudo_ids.append(pid)
        youtube_ids.append(ytid)
        scenes = slice(i * per, (i + 1) * per)
        labels = labels_of(visual[scenes], n_concepts, classes)
        split, number = ("validate", 0) if i % VALIDATE_EVERY == VALIDATE_EVERY - 1 else ("train", i % int(spec.record_files))
        if split == "train":
            train_counts[labels] += 1
        rgb = rng.normal(0.0, 0.5, yt8m.RGB_DIM).astype(np.float32)
        sound = rng.normal(0.0, 0.5, yt8m.AUDIO_DIM).astype(np.float32)
        records.setdefault((split, number), []).append(yt8m.encode_video(pid, labels, rgb, sound))
        starts, ends, texts, segments = [], [], [], []
        for j in range(per):
            s, lo = i * per + j, j * seg_len
            if not uncaptioned[i]:
                for k in range(cps):
                    starts.append(round(lo + k * seg_len / cps, 2))
                    ends.append(round(lo + (k + 1) * seg_len / cps, 2))
                    texts.append(make_caption(concepts[int(text_c[s])], rng, "asr"))
            segments.append(Segment(seg_len, (int(visual[s]),), (int(audio_c[s]),)))
            noise.append((ytid, lo, lo + seg_len, int(not audio_bad[s]), int(not text_bad[s])))
        if texts:
            captions[ytid] = {"start": starts, "end": ends, "text": texts}
        plan.jobs.append(Job(str(layout.video_file(root, ytid)), media_key(seed, settings.stream, 0, i), tuple(segments), settings.media, (n_concepts, seed)))
        plan.writers.append((written, layout.youtube8m_lookup(root, pid), yt8m.write_lookup, root, pid, ytid))  # the site's side, for a mirror or a test server
    check_unique(pseudo_ids, "pseudo id")
    check_unique(youtube_ids, "youtube id")
    for (split, number), examples in sorted(records.items()):
        plan.writers.append((yt8m.write_records, layout.youtube8m_record(root, split, number), examples))
    plan.writers += [
        (written, layout.youtube8m_ids(root), yt8m.write_ids, root, dict(zip(pseudo_ids, youtube_ids, strict=True))),
        (yt8m.write_vocabulary, root / layout.YOUTUBE8M_VOCABULARY, vocabulary(concepts, classes, train_counts, seed, settings.stream)),
        (write_howto100m_captions, root / layout.YOUTUBE8M_CAPTIONS, captions),
        (write_noise_labels, root / layout.NOISE_LABELS, pd.DataFrame(noise, columns=list(NOISE_COLUMNS))),
    ]
    return plan


# --------------------------------------------------------------------------------------------
# download


def _youtube8m_clip(root: Path, record_id: str, youtube_id: str, split: str, classes: tuple[str, ...]) -> Clip:
    if youtube_id:
        target, error = clip_target(lambda safe: layout.video_file(root, safe), "youtube id", youtube_id)
        return Clip(record_id, split, classes, youtube_id, target, error=error)
    if not yt8m.PSEUDO_ID.match(record_id):
        return Clip(record_id, split, classes, "", None, error=f"pseudo id {record_id!r} is not 4 characters of [A-Za-z0-9_-]; it cannot be looked up")
    return Clip(record_id, split, classes, "", None, error=f"pseudo id {record_id!r} has no answer of the id lookup in {layout.YOUTUBE8M_IDS}", needs_lookup=True)


def download_clips(root: Path) -> list[Clip]:
    """Whole videos of every record file on disk, under their YouTube ids (2018 pseudo ids resolved
    through video_ids.csv; one without an answer waits for the lookup, without a target)."""
    vocab = yt8m.read_vocabulary(root / layout.YOUTUBE8M_VOCABULARY)
    names = dict(zip(vocab["Index"], vocab["Name"], strict=True))
    clips = []
    for row in yt8m.read_videos(root).itertuples(index=False):
        classes = tuple(names[i] for i in row.labels if i in names) + tuple(str(i) for i in row.labels)
        clips.append(_youtube8m_clip(root, row.record_id, row.youtube_id, row.split, classes))
    return clips


def check_download_sources(key: str, spec: Mapping[str, Any]) -> None:
    """``data.download.youtube8m`` beyond the common keys: its record files come from download plans,
    one per split (their files share names otherwise), and the id lookup is a URL template."""
    if not spec.get("records"):
        raise ConfigError(f"{key}.records: empty; downloading youtube8m needs the download plans of its record files (see config/paper.yaml)")
    seen: set[str] = set()
    for i, entry in enumerate(spec["records"]):
        if entry["split"] in seen:
            raise ConfigError(f"{key}.records[{i}].split: {entry['split']!r} is listed twice; expected one download plan per split")
        seen.add(entry["split"])
    template = spec.get("id_lookup")
    if template and "{id}" not in template:
        raise ConfigError(f"{key}.id_lookup: {template!r} has no {{id}}; expected a URL template like http://data.yt8m.org/2/j/i/{{prefix}}/{{id}}.js")


def resolve_lookups(root: Path, clips: Sequence[Clip]) -> list[Clip]:
    """``clips`` with the ones that waited for the id lookup given their YouTube ids, where an
    answer is stored now (the rest unchanged; item ids and order stay, so a selection stays the same)."""
    ids = yt8m.read_ids(root) if any(c.needs_lookup for c in clips) else {}
    return [_youtube8m_clip(root, c.item_id, ids.get(c.item_id, ""), c.split, c.classes) if c.needs_lookup else c for c in clips]


# --------------------------------------------------------------------------------------------
# packing


def pack_items(root: Path) -> list[PackItem]:
    """One item per video of the records (every split), under its YouTube id, with its automatic
    captions (none: a video-audio pair) and labels; a record whose pseudo id has no YouTube id (or
    an unsafe one) is an item with its :func:`youtube8m_status`."""
    tracks = caption_tuples(root / layout.YOUTUBE8M_CAPTIONS)
    planned = []
    for row in yt8m.read_videos(root).itertuples(index=False):
        labels = tuple(int(v) for v in row.labels)
        status = youtube8m_status(root, row)
        if status is not None:
            planned.append(unpackable(row.youtube_id or row.record_id, layout.youtube8m_record_file(root, row.record), root, status, labels))
            continue
        source = layout.video_file(root, safe_id(row.youtube_id, "youtube_id"))
        meta = {"video_id": row.youtube_id, "record_id": row.record_id, "labels": list(labels)}
        planned.append(PackItem(row.youtube_id, member_key(row.youtube_id), source, row.youtube_id, os.path.relpath(source, root),
                                meta, tracks.get(row.youtube_id, ()), labels))
    return planned


SPEC = DatasetSpec(
    name=NAME,
    annotations=(layout.YOUTUBE8M_VOCABULARY, layout.YOUTUBE8M_CAPTIONS),  # and the records under video/ (layout.youtube8m_records)
    items=youtube8m_items,
    plan=plan_youtube8m,
    clips=download_clips,
    checks=(AnnotationCheck(layout.YOUTUBE8M_VOCABULARY, yt8m.read_vocabulary, f"YouTube-8M's vocabulary (header {','.join(yt8m.VOCABULARY_COLUMNS)})"),),
    classes_help="YouTube-8M vocabulary names or label indices",
    captioned=True,
    tokenized=True,
    noise_truth=True,
    packing=Packing(pack_items, ("video_id", "record_id", "labels")),
    pack_required=(layout.YOUTUBE8M_VOCABULARY,),
    download_check=check_download_sources,
)

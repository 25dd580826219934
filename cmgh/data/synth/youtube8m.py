"""What the generator makes of YouTube-8M: a non-narrative corpus in the dataset's real layout.

Videos are longer than HowTo100M's (several scenes of one or two concepts) and their text is
what YouTube's automatic captions of such videos are: mostly about something else than the
picture (``text_rate`` of the scenes, default high), and missing altogether for a fraction of the
videos (``uncaptioned_rate``: those are video-audio pairs). ``audio_rate`` of the scenes sound like
another concept (background music, voice-over). The records carry 4-character pseudo ids (2018
release) and the lookup answers map them to the YouTube ids the videos are stored under. The
ground truth goes to the dataset's own ``noise_labels.csv``; a scene of a video without captions
counts as text-aligned (there is no text to be wrong).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh import layout
from cmgh.data import formats, youtube8m
from cmgh.data.synth.concepts import make_caption
from cmgh.data.synth.plans import (
    DATASET_INDEX,
    ID_ALPHABET,
    Job,
    Plan,
    Segment,
    balanced,
    check_unique,
    concept_set,
    exact_fraction,
    item_rng,
    media_key,
    media_settings,
    other_concepts,
    written,
    youtube_id,
)

VERTICALS = ("Arts & Entertainment", "Games", "Autos & Vehicles", "Sports", "Food & Drink", "Pets & Animals", "Hobbies & Leisure", "Science")
VALIDATE_EVERY = 8  # every 8th video goes to the validate records
NAME = "youtube8m"


def pseudo_id(rng: np.random.Generator) -> str:
    """4 alphanumeric characters, like the 2018 release's ids."""
    return "".join(ID_ALPHABET[rng.integers(62, size=4)])


def vocabulary(concepts: Any, classes: int, train_counts: np.ndarray, seed: int) -> pd.DataFrame:
    """One class per concept, then broader classes grouping concepts (``vocabulary.csv``)."""
    rng = np.random.default_rng([seed, DATASET_INDEX[NAME], 99])
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
    return pd.DataFrame(rows, columns=list(youtube8m.VOCABULARY_COLUMNS))


def labels_of(scene_concepts: np.ndarray, n_concepts: int, classes: int) -> list[int]:
    """A video's labels: the concepts it shows and the broader classes they fall in."""
    extra = classes - n_concepts
    labels = {int(c) for c in scene_concepts}
    if extra > 0:
        labels |= {n_concepts + int(c) % extra for c in scene_concepts}
    return sorted(labels)


def plan_youtube8m(cfg: Any, root: Path) -> Plan:
    synth = cfg.data.synth
    seed, n_concepts, spec = int(synth.seed), int(synth.concepts), synth.youtube8m
    n, per, seg_len, cps = int(spec.videos), int(spec.segments_per_video), float(spec.segment_seconds), int(spec.captions_per_segment)
    classes = max(int(spec.classes), n_concepts)
    concepts = concept_set(n_concepts, seed)
    drng = np.random.default_rng([seed, DATASET_INDEX[NAME]])
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
        rng = item_rng(seed, NAME, 0, i)
        pid, ytid = pseudo_id(rng), youtube_id(rng)
        pseudo_ids.append(pid)
        youtube_ids.append(ytid)
        scenes = slice(i * per, (i + 1) * per)
        labels = labels_of(visual[scenes], n_concepts, classes)
        split, number = ("validate", 0) if i % VALIDATE_EVERY == VALIDATE_EVERY - 1 else ("train", i % int(spec.record_files))
        if split == "train":
            train_counts[labels] += 1
        rgb = rng.normal(0.0, 0.5, youtube8m.RGB_DIM).astype(np.float32)
        sound = rng.normal(0.0, 0.5, youtube8m.AUDIO_DIM).astype(np.float32)
        records.setdefault((split, number), []).append(youtube8m.encode_video(pid, labels, rgb, sound))
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
        plan.jobs.append(Job(str(layout.video_file(root, ytid)), media_key(seed, NAME, 0, i), tuple(segments), media_settings(cfg), (n_concepts, seed)))
        plan.writers.append((written, layout.youtube8m_lookup(root, pid), youtube8m.write_lookup, root, pid, ytid))  # the site's side, for a mirror or a test server
    check_unique(pseudo_ids, "pseudo id")
    check_unique(youtube_ids, "youtube id")
    for (split, number), examples in sorted(records.items()):
        plan.writers.append((youtube8m.write_records, layout.youtube8m_record(root, split, number), examples))
    plan.writers += [
        (written, layout.youtube8m_ids(root), youtube8m.write_ids, root, dict(zip(pseudo_ids, youtube_ids, strict=True))),
        (youtube8m.write_vocabulary, root / layout.YOUTUBE8M_VOCABULARY, vocabulary(concepts, classes, train_counts, seed)),
        (formats.write_howto100m_captions, root / layout.YOUTUBE8M_CAPTIONS, captions),
        (formats.write_noise_labels, root / layout.NOISE_LABELS, pd.DataFrame(noise, columns=list(formats.NOISE_COLUMNS))),
    ]
    return plan

"""MIL-NCE positives: the captions nearest in time to a clip's window (VATT), on a generated
HowTo100M video whose segments show different concepts, so time decides which captions are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tests.helpers import tiny_overrides

from cmgh import config as config_mod
from cmgh import layout
from cmgh.data import datasets
from cmgh.data.datasets import howto100m
from cmgh.data.datasets.caption_json import read_howto100m_captions
from cmgh.data.datasets.generator import SynthSettings, concept_set
from cmgh.data.datasets.items import Item, WindowSpec, nearest, nearest_captions

# A world where the K nearest captions are not all of a video's: 4 segments (one concept each) x 2
# captions, a 2 s clip per segment (frames / fps = 8 / 4), the 2 nearest captions as positives.
ALIGNED = ["data.synth.concepts=8", "data.synth.howto100m.videos=6", "data.synth.howto100m.segments_per_video=4",
           "data.synth.howto100m.captions_per_segment=2", "data.synth.howto100m.segment_seconds=2.0",
           "data.noise.text_rate=0.0", "features.clips_per_video=4", "features.text.candidates=2"]


def planned_items(root: Path, *extra: str) -> tuple[list[Item], list[tuple[int, ...]], config_mod.Config]:
    """The HowTo100M annotation files of a generated world (its plan's writers, no media rendered),
    its items, and each video's segment concepts."""
    cfg = config_mod.load(overrides=[*tiny_overrides(root), *ALIGNED, *extra])
    spec = datasets.get("howto100m")
    plan = howto100m.plan_howto100m(SynthSettings.of(cfg, "howto100m", datasets.stream_index("howto100m"), spec.synth_sections), root)
    for writer, path, *args in plan.writers:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer(path, *args)
    segments = [tuple(seg.video[0] for seg in job.segments) for job in plan.jobs]
    return howto100m.howto100m_items(root, WindowSpec.from_features(cfg.features)), segments, cfg


def caption_concepts(text: str, words: list[frozenset[str]]) -> set[int]:
    return {c for c, vocab in enumerate(words) for w in text.split() if w in vocab}


def test_positives_are_the_captions_of_the_windows_own_segment(tmp_path: Path) -> None:
    items, segments, cfg = planned_items(tmp_path)
    words = [frozenset(c.words) for c in concept_set(int(cfg.data.synth.concepts), int(cfg.data.synth.seed))]
    assert len(items) == len(segments) * 4
    mixed = [v for v, concepts in enumerate(segments) if len(set(concepts)) > 1]
    assert len(mixed) == len(segments)  # every video shows more than one concept
    captions = read_howto100m_captions(tmp_path / layout.HOWTO100M_CAPTIONS)
    for v, concepts in enumerate(segments):
        track = captions[captions["video_id"] == items[4 * v].meta["video_id"]]
        for k, concept in enumerate(concepts):
            item = items[4 * v + k]
            assert (item.meta["clip_start"], item.meta["clip_end"]) == (2.0 * k, 2.0 * k + 2.0)
            own = track.iloc[2 * k : 2 * k + 2]["text"].tolist()  # the two captions generated inside segment k
            assert sorted(item.captions) == sorted(own)
            for text in item.captions:  # they speak of the window's own concept, none of another segment's
                assert caption_concepts(text, words) == {concept}
            others = {c for j, c in enumerate(concepts) if j != k and c != concept}
            assert not any(caption_concepts(t, words) & others for t in item.captions)


def test_whole_video_bags_mix_the_other_segments_concepts(tmp_path: Path) -> None:
    """The study's former setting (2 segments x 2 captions, 4 candidates): every window's bag is all
    of its video's captions, so a window's positives include the other segment's concept."""
    items, segments, cfg = planned_items(tmp_path, "data.synth.howto100m.segments_per_video=2", "features.clips_per_video=2",
                                         "features.text.candidates=4")
    words = [frozenset(c.words) for c in concept_set(int(cfg.data.synth.concepts), int(cfg.data.synth.seed))]
    for v, concepts in enumerate(segments):
        first, second = items[2 * v], items[2 * v + 1]
        assert sorted(first.captions) == sorted(second.captions)
        if concepts[0] != concepts[1]:
            assert set().union(*(caption_concepts(t, words) for t in first.captions)) == set(concepts)


def test_nearest_is_by_distance_of_caption_midpoint_to_window_centre() -> None:
    starts = np.array([0.0, 1.0, 2.0, 3.0, 6.0])
    ends = np.array([1.0, 2.0, 3.0, 4.0, 7.0])
    assert nearest(starts, ends, 2.0, 4.0, 2).tolist() == [2, 3]  # midpoints 2.5 and 3.5 around the centre 3
    assert nearest(starts, ends, 2.0, 4.0, 3).tolist() == [2, 3, 1]  # 1.5 before 6.5
    assert nearest(starts, ends, 1.0, 2.0, 3).tolist() == [1, 0, 2]  # 0.5 and 2.5 tie (1.0 from 1.5): caption order
    track = pd.DataFrame({"start": starts, "end": ends, "text": list("abcde")})
    assert nearest_captions(track, 5.0, 8.0, 1) == ("e",)
    assert nearest_captions(track.iloc[0:0], 0.0, 2.0, 2) == ()


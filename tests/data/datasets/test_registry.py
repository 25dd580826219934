"""The dataset registry: the schema's names, in its order, each with one module holding its facts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cmgh import config, layout
from cmgh.data import datasets
from cmgh.errors import DataError
from tests.helpers import REPO

NAMES = ("howto100m", "kinetics", "audioset", "msrvtt", "youtube8m")  # the generator's streams are keyed by this order: append only


def test_the_registry_is_the_schema_enum_in_order() -> None:
    assert datasets.names() == tuple(config.choices("data.datasets"))
    assert tuple(spec.name for spec in datasets.specs()) == datasets.names()
    assert datasets.names()[: len(NAMES)] == NAMES
    assert [datasets.stream_index(name) for name in NAMES] == list(range(len(NAMES)))
    for spec in datasets.specs():
        assert datasets.get(spec.name) is spec
        assert type(spec).__module__ == "cmgh.data.datasets" and spec.plan.__module__ == f"cmgh.data.datasets.{spec.name}"


def test_each_spec_says_what_the_old_constants_said() -> None:
    """The five datasets' facts as the constants spread over the package said them (a dataset added later has its own)."""
    specs = [datasets.get(name) for name in NAMES]
    assert tuple(n for n in datasets.CAPTIONED if n in NAMES) == ("howto100m", "youtube8m")
    assert tuple(n for n in datasets.TOKENIZED if n in NAMES) == ("howto100m", "msrvtt", "youtube8m")
    assert tuple(n for n in datasets.NOISE_TRUTH if n in NAMES) == ("howto100m", "youtube8m")
    assert {spec.name: spec.pretrain_splits for spec in specs if spec.pretrain_splits is not None} == {"audioset": ("train",)}
    assert [spec.name for spec in specs if spec.audio_only] == ["audioset"]
    assert [spec.name for spec in datasets.specs() if spec.vocabulary is not None] == ["howto100m"]  # one vocabulary
    assert [spec.name for spec in specs if spec.texts is not None] == ["msrvtt"]
    assert {spec.name: spec.synth_sections for spec in specs if spec.synth_sections} == {"howto100m": ("noise",)}
    assert [spec.name for spec in specs if spec.download_check is not None] == ["youtube8m"]  # its record plans and id lookup
    packing = {spec.name: spec.packing.columns for spec in specs if spec.packing is not None}
    assert packing == {"howto100m": ("video_id",), "audioset": ("YTID", "split", "labels"), "youtube8m": ("video_id", "record_id", "labels")}
    required = {p.name for name in packing for p in datasets.get(name).pack_files("d")[1]}
    assert required == {"HowTo100M_v1.csv", "caption.json", "class_labels_indices.csv", "balanced_train_segments.csv", "vocabulary.csv"}
    assert datasets.get("audioset").pack_files("d")[0] == [
        Path("d/audioset/class_labels_indices.csv"), Path("d/audioset/balanced_train_segments.csv"), Path("d/audioset/unbalanced_train_segments.csv"),
    ]
    files = {spec.name: [str(p.relative_to(layout.dataset_dir("d", spec.name))) for p in spec.annotation_files("d")] for spec in specs}
    assert files == {
        "howto100m": ["HowTo100M_v1.csv", "caption.json"],
        "kinetics": ["annotations/train.csv", "annotations/validate.csv", "annotations/test.csv"],
        "audioset": ["class_labels_indices.csv", "balanced_train_segments.csv", "eval_segments.csv"],
        "msrvtt": ["videodatainfo.json", "MSRVTT_JSFUSION_test.csv"],
        "youtube8m": ["vocabulary.csv", "caption.json"],
    }
    assert datasets.get("kinetics").check_of("annotations/train.csv")[0] is not None
    assert datasets.get("audioset").check_of("unbalanced_train_segments.csv")[0] is not None
    assert datasets.get("youtube8m").check_of("video/train0000.tfrecord") == (None, "the annotation file video/train0000.tfrecord")


def test_an_unknown_name_is_one_line() -> None:
    with pytest.raises(DataError, match=r"^dataset 'nosuchset' is unknown \(expected one of howto100m, kinetics, audioset, msrvtt, youtube8m[^\n]*\)$"):
        datasets.get("nosuchset")


def test_the_registry_loads_without_torch_or_pyav() -> None:
    """The workflow reads it at parse time: no dataset module may import torch or PyAV at import."""
    probe = "import sys; from cmgh.data import datasets; datasets.specs(); print(sorted({'torch', 'av'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"

"""The pre-training stream over real packed shards (sources in the HowTo100M/AudioSet layouts packed
by the real writer) and real DataLoader worker processes: coverage per epoch, determinism, resume,
mixing, captions, augmentation, byte-range reads."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from cmgh import config as config_mod, layout
from cmgh.data.datasets import items
from cmgh.data.stream import augment
from cmgh.data.io import media
from cmgh.data.stream.mixing import Schedule, StreamPosition
from cmgh.data.stream.decoded import DecodedSource
from cmgh.data.stream.packed import PackedSource, caption_track
from cmgh.data.stream.pretrain import PretrainStream
from cmgh.data.extract.text import Vocabulary
from cmgh.errors import ConfigError, DataError
from tests.data.corpus_trees import Clip, pack_tree, write_audioset, write_howto100m

FPS, SR, SECONDS, H, W = 4, 8000, 3.0, 32, 48
N_HOWTO, N_AUDIOSET = 10, 6
SETTINGS = [
    "features.video.frames=4", "features.video.fps=4", "features.video.size=24", "features.video.short_side=32",
    "features.audio.sample_rate=8000", "features.text.max_tokens=6", "features.text.candidates=2",
    "features.packed.shuffle_buffer=4", "features.shard_size=4",
]


def features(**augment_overrides: object) -> dict:
    out = config_mod.load(overrides=SETTINGS).to_dict()["features"]
    out["augment"].update(augment_overrides)
    return out


def tone(seconds: float = SECONDS) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def ramp_frames(seed: int) -> np.ndarray:
    """Frame t is flat gray 16 + 12 t (the time it shows can be read back) with a seed-coloured corner."""
    n = int(SECONDS * FPS)
    frames = np.repeat((16 + 12 * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, axis=3) * np.ones((1, H, W, 1), np.uint8)
    frames[:, :8, :8] = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
    return frames


def still_frames(seconds: float = SECONDS) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=-1).clip(0, 255).astype(np.uint8)  # smooth: H.264 keeps it
    return np.repeat(image[None], int(seconds * FPS), axis=0)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Vocabulary]:
    base = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(40)]
    clips, captions = {}, {}
    for v in range(N_HOWTO):
        vid = f"vid{v:02d}"
        captions[vid] = [(float(s), float(s) + 0.5, " ".join(rng.choice(words, 3))) for s in np.arange(0.0, SECONDS, 0.5)]
        clips[vid] = Clip(ramp_frames(v), FPS, tone(), SR)
    write_howto100m(base / "data" / "howto100m", clips, captions)
    segments = {(f"yt{a}.x", 30): Clip(ramp_frames(100 + a), FPS) for a in range(N_AUDIOSET)}  # a dot: keys replace it
    write_audioset(base / "data" / "audioset", segments, {key: [a] for a, key in enumerate(segments)}, classes=N_AUDIOSET)
    vocab = Vocabulary.build([c[2] for cs in captions.values() for c in cs], 64)
    return pack_tree(base, "howto100m", SETTINGS), pack_tree(base, "audioset", SETTINGS), vocab


def make(corpora, seed=0, rank=0, world=1, start=None, stop=4, batch=4, weights=(1.0, 0.0), feats=None):
    h, a, vocab = corpora
    f = feats or features()
    sources = [("howto100m", weights[0], PackedSource(h, f, vocab)), ("audioset", weights[1], PackedSource(a, f, vocab))]
    return PretrainStream(sources, batch, seed, rank=rank, world_size=world, start=start, stop=stop)


def run(stream: PretrainStream, workers: int = 0) -> list[dict]:
    return list(DataLoader(stream, batch_size=None, num_workers=workers))


def ids(batches: list[dict]) -> list[str]:
    return [i for b in batches for i in b["item_id"]]


def test_two_ranks_two_workers_cover_every_sample_once_per_epoch(corpora) -> None:
    steps = 5  # 5 x 4 = 20 draws = exactly 2 epochs of the 10 HowTo100M samples
    per_rank = [run(make(corpora, rank=r, world=2, stop=steps), workers=2) for r in range(2)]
    assert [b["step"] for b in per_rank[0]] == list(range(steps))
    assert all(len(b["item_id"]) == 2 for b in per_rank[0] + per_rank[1])
    draws = [i for s in range(steps) for i in per_rank[0][s]["item_id"] + per_rank[1][s]["item_id"]]
    everything = sorted(f"vid{v:02d}" for v in range(N_HOWTO))
    assert sorted(draws[:N_HOWTO]) == everything and sorted(draws[N_HOWTO:]) == everything
    assert draws[:N_HOWTO] != draws[N_HOWTO:]  # each epoch has its own order


def test_mixed_corpora_each_drawn_once_per_corpus_epoch(corpora) -> None:
    batches = run(make(corpora, weights=(0.5, 0.5), stop=12), workers=2)
    for name, n, prefix in (("howto100m", N_HOWTO, "vid"), ("audioset", N_AUDIOSET, "yt")):
        seq = [i for b in batches for i, d in zip(b["item_id"], b["dataset"], strict=True) if d == name]
        assert len(seq) >= n and all(i.startswith(prefix) for i in seq)
        assert len(set(seq[:n])) == n


def test_same_seed_same_sequence_other_seed_other(corpora) -> None:
    a, b, c = run(make(corpora, seed=1)), run(make(corpora, seed=1)), run(make(corpora, seed=2))
    assert ids(a) == ids(b)
    assert all(torch.equal(x["video"], y["video"]) and torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b, strict=True))
    assert ids(a) != ids(c)


def test_restart_at_position_equals_uninterrupted(corpora) -> None:
    whole = make(corpora, weights=(0.6, 0.4), stop=6)
    full = run(whole)
    pos = whole.position(3)
    assert sum(pos.consumed.values()) == 3 * 4
    restored = StreamPosition.from_dict(pos.to_dict())
    tail = run(make(corpora, weights=(0.6, 0.4), start=restored, stop=6), workers=2)
    assert [b["step"] for b in tail] == [3, 4, 5]
    for x, y in zip(full[3:], tail, strict=True):
        assert x["item_id"] == y["item_id"]
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["audio"], y["audio"]) and torch.equal(x["text"], y["text"])


def test_worker_count_does_not_change_the_sequence(corpora) -> None:
    base = run(make(corpora, weights=(0.5, 0.5), stop=5))
    for workers in (2, 3):
        other = run(make(corpora, weights=(0.5, 0.5), stop=5), workers=workers)
        assert [b["step"] for b in other] == list(range(5))
        assert ids(other) == ids(base)
        assert all(torch.equal(x["video"], y["video"]) for x, y in zip(base, other, strict=True))


def test_batch_follows_the_contract(corpora) -> None:
    batch = run(make(corpora, weights=(0.5, 0.5), stop=1))[0]
    assert batch["video"].dtype == torch.uint8 and tuple(batch["video"].shape) == (4, 4, 24, 24, 3)
    assert batch["audio"].dtype == torch.float32 and tuple(batch["audio"].shape) == (4, 8000)
    assert batch["text"].dtype == torch.int64 and tuple(batch["text"].shape) == (4, 2, 6)
    assert batch["text_mask"].dtype == torch.bool and batch["has_text"].dtype == torch.bool
    assert batch["jitter"].dtype == torch.float32 and tuple(batch["jitter"].shape) == (4, 3)
    assert (batch["jitter"] != torch.from_numpy(augment.IDENTITY)).any(dim=1).all()  # packed rows: each its own map
    assert batch["clip_start"].dtype == torch.float64 and torch.allclose(batch["clip_end"] - batch["clip_start"], torch.tensor(1.0, dtype=torch.float64))
    assert batch["step"] == 0 and batch["skipped"] == 0 and len(batch["item_id"]) == len(batch["dataset"]) == 4


def test_window_captions_and_audio_align_with_the_drawn_window(corpora) -> None:
    h, _, vocab = corpora
    still = features(crop_scale=[1.0, 1.0], crop_ratio=[1.5, 1.5], flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    source = PackedSource(h, still, vocab)
    for seed in range(6):
        i = seed % len(source)
        sample = source.sample(i, np.random.default_rng(seed))
        start = sample["clip_start"]
        assert 0.0 <= start <= float(source.index.at[i, "duration"]) - 1.0
        shown = np.minimum(np.floor(start * FPS + 1e-6 + np.arange(4)), SECONDS * FPS - 1)  # frames on screen at the 4 sample times
        level = sample["video"].float()[:, 12:, 12:].mean(dim=(1, 2, 3)).numpy()  # away from the coloured corner
        np.testing.assert_allclose(level, 16 + 12 * shown, atol=4)
        assert torch.equal(sample["jitter"], torch.from_numpy(augment.IDENTITY))
        captions = json.loads(source._read(i, "json"))["captions"]
        assert len(captions) == 6  # the source's captions, in packed-clip seconds (the clip starts at 0)
        mids = np.array([0.5 * (c["start"] + c["end"]) for c in captions])
        want = np.argsort(np.abs(mids - (start + 0.5)), kind="stable")[:2]
        expected = np.stack([vocab.encode(captions[j]["text"], 6) for j in want])
        np.testing.assert_array_equal(sample["text"].numpy(), expected)
        assert sample["has_text"] and sample["text_mask"].all()
        assert abs(float(sample["audio"].abs().max()) - 0.5) < 0.1  # the tone, not the zero padding


def test_augmentation_same_for_every_frame_and_different_between_samples() -> None:
    spec = augment.AugmentSpec.from_features(features())
    image = np.random.default_rng(0).integers(0, 256, (1, 40, 60, 3), dtype=np.uint8)
    clip = np.repeat(image, 6, axis=0)
    outs, maps, loader_parts = [], [], []
    for seed in range(4):
        params = augment.draw(spec, np.random.default_rng(seed), 40, 60)
        part = augment.apply(clip, params, 24, jitter=False)  # the loader's share: crop, resize, flip
        jitter = torch.from_numpy(augment.jitter_map(params))
        out = augment.apply_jitter(part[None], jitter[None])[0]  # the device's share
        assert tuple(out.shape) == (6, 24, 24, 3) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[t]) for t in range(6))
        # the fused jitter matches torchvision's functional chain up to its intermediate clamps
        assert (out.int() - augment.reference(clip, params, 24).int()).abs().float().mean() < 2.0
        # on a CPU it is the loader's numpy form (the old way); batched torch ops (a GPU's way) agree up to float rounding
        assert torch.equal(out, augment.apply(clip, params, 24))
        batched = augment.apply_jitter(part[None], jitter[None], batched=True)[0]
        assert (out.int() - batched.int()).abs().max() <= 1 and (out != batched).float().mean() < 0.01
        outs.append(out)
        maps.append(jitter)
        loader_parts.append(part)
    assert all(not torch.equal(outs[0], o) for o in outs[1:])
    maps[1] = torch.from_numpy(augment.IDENTITY)  # a decoded corpus's row in a mixed batch
    batch = augment.apply_jitter(torch.stack(loader_parts), torch.stack(maps))
    assert torch.equal(batch[0], outs[0]) and torch.equal(batch[1], loader_parts[1]) and torch.equal(batch[3], outs[3])
    batch = augment.apply_jitter(torch.stack(loader_parts), torch.stack(maps), batched=True)
    assert torch.equal(batch[1], loader_parts[1]) and (batch[3].int() - outs[3].int()).abs().max() <= 1
    before = torch.random.get_rng_state()
    params = augment.draw(spec, np.random.default_rng(9), 40, 60)
    augment.apply_jitter(augment.apply(clip, params, 24, jitter=False)[None], torch.from_numpy(augment.jitter_map(params))[None])
    augment.apply(clip, params, 24)
    assert torch.equal(before, torch.random.get_rng_state())


def test_loader_jitter_equals_device_jitter_and_hue_runs_in_the_loader(corpora) -> None:
    """The crop comes out of the decoder either way; the colour jitter is the device's (shipped map),
    the loader's (``device_jitter=False``: same pixels), or with ``hue > 0`` torchvision's in the loader."""
    h, _, vocab = corpora
    on_device, in_loader = PackedSource(h, features(), vocab), PackedSource(h, features(), vocab, device_jitter=False)
    hue = PackedSource(h, features(hue=0.3), vocab)
    for i in range(3):
        a, b, c = (s.sample(i, np.random.default_rng(i)) for s in (on_device, in_loader, hue))
        assert torch.equal(b["jitter"], torch.from_numpy(augment.IDENTITY)) and not torch.equal(a["jitter"], b["jitter"])
        assert torch.equal(augment.apply_jitter(a["video"][None], a["jitter"][None])[0], b["video"])
        rng = np.random.default_rng(i)
        assert rng.uniform(0, float(hue.index.at[i, "duration"]) - 1) == c["clip_start"]
        params = augment.draw(hue.spec.augment, rng, H, W)
        assert params.factors[augment.HUE] != 0.0 and torch.equal(c["jitter"], torch.from_numpy(augment.IDENTITY))
        box = augment.crop_of(params, 24)
        cropped, _ = media.decode_clip(hue._read(i, "mp4"), c["clip_start"], 4, FPS, SR, short_side=32, crop=lambda h, w, box=box: box)
        assert torch.equal(c["video"], augment.colour(torch.from_numpy(cropped), params)) and not np.array_equal(c["video"].numpy(), cropped)


def test_streamed_still_clip_augments_every_frame_alike(corpora, tmp_path: Path) -> None:
    _, _, vocab = corpora
    write_howto100m(tmp_path / "data" / "howto100m", {f"still{i}": Clip(still_frames(), FPS) for i in range(2)}, {})
    lossless = [*SETTINGS, "features.packed.crf=0"]  # re-encoding noise (~1.5 levels at crf 23) would mask the test
    source = PackedSource(pack_tree(tmp_path, "howto100m", lossless), features(), vocab)
    batch = PretrainStream([("howto100m", 1.0, source)], 2, seed=0, stop=1)
    loaded = run(batch)[0]
    video = augment.apply_jitter(loaded["video"], loaded["jitter"])  # what the trainer's device sees
    assert not torch.equal(video, loaded["video"])  # the jitter happens there
    for clip in video:
        assert all((clip[0].float() - clip[t].float()).abs().mean() < 1.0 for t in range(4))
    assert (video[0].float() - video[1].float()).abs().mean() > 5


def test_member_is_read_as_a_byte_range(corpora, tmp_path: Path) -> None:
    _, _, vocab = corpora
    seconds = 60.0
    frames = np.random.default_rng(0).integers(0, 256, (int(seconds * FPS), H, W, 3), dtype=np.uint8)  # noise: every frame costs bytes
    write_howto100m(tmp_path / "data" / "howto100m", {"long": Clip(frames, FPS, tone(seconds), SR)}, {})
    source = PackedSource(pack_tree(tmp_path, "howto100m", SETTINGS), features(), vocab)
    size = int(source.index.at[0, "mp4_size"])
    for seed in range(3):
        before = source.bytes_read
        sample = source.sample(0, np.random.default_rng(seed))
        read = source.bytes_read - before
        assert read < size / 4  # the header and about a second of a minute, not the whole member
        rng = np.random.default_rng(seed)
        assert rng.uniform(0, float(source.index.at[0, "duration"]) - 1) == sample["clip_start"]
        params = augment.draw(source.spec.augment, rng, H, W)  # the box is drawn from the decoded frames' size
        whole = source._read(0, "mp4")
        box = augment.crop_of(params, 24)
        video, audio = media.decode_clip(whole, sample["clip_start"], 4, FPS, SR, short_side=32, crop=lambda h, w, box=box: box)
        assert torch.equal(torch.from_numpy(video), sample["video"])  # the byte range decodes what the whole member does
        assert np.array_equal(audio, sample["audio"].numpy()) and np.abs(audio).max() > 0.4
        plain, _ = media.decode_clip(whole, sample["clip_start"], 4, FPS, SR, short_side=32)
        torchvision = augment.apply(plain, params, 24, jitter=False)  # the same box and flip, torchvision's resize of RGB frames
        # 7-11 levels on these pixel-noise frames (the filters' worst case: the box of a smooth picture
        # differs by ~2, tests/data/io/test_frames.py); another box of noise would differ by ~85
        assert (torchvision.int() - sample["video"].int()).abs().float().mean() < 12


def test_audioset_rows_have_no_text(corpora) -> None:
    batches = run(make(corpora, weights=(0.5, 0.5), stop=4))
    rows = [(d, bool(t), bool(m.any())) for b in batches for d, t, m in zip(b["dataset"], b["has_text"], b["text_mask"], strict=True)]
    assert {d for d, _, _ in rows} == {"howto100m", "audioset"}
    assert all((not t and not m) if d == "audioset" else (t and m) for d, t, m in rows)


def test_mixture_proportions_within_tolerance() -> None:
    schedule = Schedule(["howto100m", "audioset"], [0.7, 0.3], 64, seed=0)
    counts = np.array([schedule.counts(s) for s in range(2000)])
    assert (counts.sum(axis=1) == 64).all()
    share = counts[:, 0].sum() / counts.sum()
    assert abs(share - 0.7) < 0.01  # binomial std of the share over 128k draws is 0.0013
    _, corpus, k = schedule.slots(5, np.array([100, 7]))
    assert sorted(k[corpus == 1].tolist()) == list(range(7, 7 + int((corpus == 1).sum())))
    for bad in ([-1.0, 1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError, match="pretrain.corpora"):
            Schedule(["a", "b"], bad, 8, seed=0)


def damaged_copy(packed: Path, dest: Path, item: str, member: str, damage: Callable[[int], bytes]) -> pd.Series:
    """A copy of a packed corpus whose ``item``'s ``member`` (mp4 or json) is replaced, in place, by
    ``damage(its size)``; the item's index row."""
    (dest / layout.SHARDS_DIR).mkdir(parents=True)
    for f in (packed / layout.SHARDS_DIR).iterdir():
        (dest / layout.SHARDS_DIR / f.name).write_bytes(f.read_bytes())
    (dest / layout.FEATURE_INDEX).write_bytes((packed / layout.FEATURE_INDEX).read_bytes())
    row = pd.read_parquet(dest / layout.FEATURE_INDEX).set_index("item_id").loc[item]
    tar = layout.shard_file(dest, int(row["shard"]), "tar")
    data = bytearray(tar.read_bytes())
    start, size = int(row[f"{member}_offset"]), int(row[f"{member}_size"])
    data[start:start + size] = damage(size)
    tar.write_bytes(bytes(data))
    return row


def test_corrupt_member_is_skipped_counted_and_substituted(corpora, tmp_path: Path, caplog) -> None:
    h, a, vocab = corpora
    broken = tmp_path / "howto100m"
    row = damaged_copy(h, broken, "vid05", "mp4", lambda size: b"\x00" * size)

    def stream(start=None):
        return PretrainStream([("howto100m", 1.0, PackedSource(broken, features(), vocab))], 4, 0, start=start, stop=5)

    with caplog.at_level(logging.WARNING):
        batches = run(stream())
    assert sum(b["skipped"] for b in batches) == 2  # once per epoch (20 draws = 2 epochs)
    assert "vid05" not in ids(batches) and len(ids(batches)) == 20
    assert "vid05.mp4" in caplog.text and f"{int(row['shard']):05d}.tar" in caplog.text
    s = stream()
    resumed = run(stream(start=s.position(2)), workers=2)
    assert ids(resumed) == ids(batches[2:]) and [b["skipped"] for b in resumed] == [b["skipped"] for b in batches[2:]]


@pytest.mark.parametrize(("meta", "message"), [
    ({"captions": 5}, "captions is a JSON int (expected a list of {start, end, text})"),
    ([1, 2], "a JSON list (expected an object with a captions list)"),
    ({"captions": [{"start": "x", "end": 1, "text": "a"}]}, "captions[0].start is 'x' (expected a finite number of seconds)"),
    ({"captions": [{"start": 0, "end": True, "text": "a"}]}, "captions[0].end is True"),  # unlisted: a bool is not a time
    ({"captions": [{"start": 0, "end": 1, "text": 7}]}, "captions[0].text is 7 (expected a string)"),
    ({"captions": ["a"]}, "captions[0] is a JSON str"),
])
def test_a_json_member_of_the_wrong_shape_is_a_data_error(meta: object, message: str) -> None:
    with pytest.raises(DataError, match=r"^s/x.json: corrupt: " + re.escape(message)):
        caption_track(meta, "s/x.json")
    assert caption_track({}, "s/x.json") == [] and caption_track({"captions": [{"start": 0, "end": 1.5, "text": "a"}]}, "") == [(0.0, 1.5, "a")]


def test_a_wrong_shaped_json_member_is_substituted_not_a_crash(corpora, tmp_path: Path, caplog) -> None:
    h, _, vocab = corpora
    broken = tmp_path / "howto100m"
    damaged_copy(h, broken, "vid03", "json", lambda size: b'{"captions": 5}'.ljust(size))  # valid JSON (trailing blanks), the wrong shape
    def stream():
        return PretrainStream([("howto100m", 1.0, PackedSource(broken, features(), vocab))], 4, 0, stop=5)

    with caplog.at_level(logging.WARNING):
        batches = run(stream())
    assert sum(b["skipped"] for b in batches) == 2 and "vid03" not in ids(batches) and len(ids(batches)) == 20
    assert "vid03.json: corrupt: captions is a JSON int" in caplog.text
    assert ids(run(stream(), workers=2)) == ids(batches)  # worker processes substitute it alike


def test_decoded_source_gives_the_same_batch_shape(tmp_path: Path) -> None:
    folder = tmp_path / "howto100m"
    n, k, length = 5, 2, 6
    rng = np.random.default_rng(0)
    arrays = {
        "video": rng.integers(0, 256, (n, 4, 24, 24, 3), dtype=np.uint8),
        "audio": rng.uniform(-1, 1, (n, 8000)).astype(np.float32),
        "text": rng.integers(0, 50, (n, k, length)).astype(np.int32),
        "text_mask": np.ones((n, k), dtype=bool),
    }
    for name, arr in arrays.items():
        path = layout.shard_file(folder, 0, f"{name}.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)
    pd.DataFrame({
        "item_id": [f"v{i}_000" for i in range(n)], "shard": 0, "row": range(n), "video_id": [f"v{i}" for i in range(n)],
        "clip_start": [2.0 * i for i in range(n)], "clip_end": [2.0 * i + 1 for i in range(n)],
    }).to_parquet(folder / layout.FEATURE_INDEX)
    source = DecodedSource(folder, text_shape=(k, length))
    assert sorted(source.order(0, 0).tolist()) == list(range(n)) and source.order(0, 0).tolist() != source.order(1, 0).tolist()
    batch = run(PretrainStream([("howto100m", 1.0, source)], 5, 0, stop=1))[0]
    assert sorted(batch["item_id"]) == [f"v{i}_000" for i in range(n)]
    i = batch["item_id"].index("v3_000")
    assert torch.equal(batch["video"][i], torch.from_numpy(arrays["video"][3])) and batch["clip_start"][i] == 6.0
    assert batch["has_text"].all() and tuple(batch["text"].shape) == (5, k, length)
    assert torch.equal(batch["jitter"], torch.from_numpy(augment.IDENTITY).expand(5, 3))  # no augmentation


def test_nearest_captions_is_one_rule() -> None:
    order = items.nearest(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0]), 2.0, 3.0, 2)
    assert order.tolist() == [2, 1]

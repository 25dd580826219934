"""TFRecord framing and tf.train messages without TensorFlow: round trips, checksums, truncation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from cmgh.data.io import tfrecord
from cmgh.errors import DataError


def test_checksum_is_castagnoli_with_tensorflows_mask() -> None:
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    crc = 0xE3069283
    assert tfrecord.masked_crc(b"123456789") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_examples_round_trip_through_a_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        tfrecord.encode_example({"id": [b"Ab3x"], "labels": [3, 17, 3861], "mean_rgb": rng.random(1024), "mean_audio": rng.random(128)}),
        tfrecord.encode_example({"video_id": [b"dQw4w9WgXcQ"], "labels": np.array([], dtype=np.int64), "mean_rgb": np.zeros(1024)}),
    ]
    path = tfrecord.write_records(tmp_path / "train0000.tfrecord", records)
    first, second = (tfrecord.parse_example(r) for r in tfrecord.read_records(path))
    assert first["id"] == [b"Ab3x"] and first["labels"].tolist() == [3, 17, 3861]
    assert first["mean_rgb"].dtype == np.float32 and first["mean_rgb"].shape == (1024,) and first["mean_audio"].shape == (128,)
    assert second["video_id"] == [b"dQw4w9WgXcQ"] and len(second["labels"]) == 0


def test_sequence_examples_keep_one_value_per_step() -> None:
    frames = [bytes([i] * 1024) for i in range(3)]
    data = tfrecord.encode_sequence_example({"id": [b"Zz09"], "labels": [5]}, {"rgb": [[f] for f in frames], "audio": [[b"\x00" * 128]] * 3})
    context, lists = tfrecord.parse_sequence_example(data)
    assert context["id"] == [b"Zz09"] and context["labels"].tolist() == [5]
    assert [step[0] for step in lists["rgb"]] == frames and len(lists["audio"]) == 3


def _file(tmp_path: Path, n: int = 3) -> tuple[Path, bytes]:
    records = [tfrecord.encode_example({"id": [f"v{i:03d}".encode()], "labels": [i]}) for i in range(n)]
    path = tfrecord.write_records(tmp_path / "validate0001.tfrecord", records)
    return path, path.read_bytes()


def test_a_flipped_byte_names_the_file_and_record(tmp_path: Path) -> None:
    path, raw = _file(tmp_path)
    record = len(tfrecord.frame(tfrecord.encode_example({"id": [b"v000"], "labels": [0]})))
    damaged = bytearray(raw)
    damaged[record + 14] ^= 0xFF  # a data byte of record 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"validate0001\.tfrecord: record 1: corrupt \(data checksum mismatch\)$"):
        list(tfrecord.read_records(path))
    damaged = bytearray(raw)
    damaged[record + 2] ^= 0x01  # the length of record 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"record 1: corrupt \(length checksum mismatch\)"):
        list(tfrecord.read_records(path))


@pytest.mark.parametrize("cut", [5, 13, 1])
def test_a_truncated_file_is_one_line_naming_the_record(tmp_path: Path, cut: int) -> None:
    path, raw = _file(tmp_path)
    path.write_bytes(raw[:-cut])
    with pytest.raises(DataError, match=r"record 2: truncated") as err:
        list(tfrecord.read_records(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("length", [2**40, 2**34, 2**64 - 1])
def test_a_huge_length_field_is_refused_before_any_allocation(tmp_path: Path, length: int) -> None:
    path, raw = _file(tmp_path)
    header = length.to_bytes(8, "little")  # with a valid checksum: only the bytes left can refute it
    path.write_bytes(header + tfrecord._FOOTER.pack(tfrecord.masked_crc(header)) + raw)
    with pytest.raises(DataError, match=rf"record 0: truncated \(its length field says {length} data bytes, {len(raw) - 4} are left\)$"):
        list(tfrecord.read_records(path))


def test_garbage_that_frames_correctly_is_not_an_example(tmp_path: Path) -> None:
    path = tfrecord.write_records(tmp_path / "test0000.tfrecord", [b"\xff\xff\xff\xff"])
    with pytest.raises(DataError, match="corrupt: not a tf.train.Example"):
        tfrecord.parse_example(next(tfrecord.read_records(path)), where=f"{path}: record 0")


def test_reading_never_imports_tensorflow(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    code = (
        "import sys; from cmgh.data.io import tfrecord; "
        f"[tfrecord.parse_example(r) for r in tfrecord.read_records({str(path)!r})]; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_wire_layout_is_tensorflows() -> None:
    # Example{features: {feature: {"a": Feature{int64_list: [1, 2]}}}}, spelt out from example.proto /
    # feature.proto field numbers (Example.features = 1, Features.feature = 1 (map), Feature.bytes_list
    # = 1, float_list = 2, int64_list = 3, packed values = 1): what TensorFlow writes.
    wire = bytes.fromhex("0a0d" "0a0b" "0a0161" "1206" "1a04" "0a020102")
    assert tfrecord.encode_example({"a": [1, 2]}) == wire
    assert tfrecord.parse_example(wire)["a"].tolist() == [1, 2]
    floats = bytes.fromhex("0a0f" "0a0d" "0a0162" "1208" "1206" "0a040000803f")  # {"b": float_list [1.0]}
    assert tfrecord.parse_example(floats)["b"].tolist() == [1.0]


def test_the_same_example_has_the_same_bytes_in_every_process() -> None:
    """A message's map (the feature names) is written in key order: the generator's YouTube-8M
    records are byte-identical from run to run, not in the order of a per-process hash."""
    code = ("import sys; from cmgh.data.io import tfrecord; sys.stdout.write(tfrecord.encode_example("
            "{n: [i] for i, n in enumerate(['id', 'labels', 'mean_rgb', 'mean_audio', 'a', 'b', 'c', 'd'])}).hex())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(4)}
    assert len(runs) == 1

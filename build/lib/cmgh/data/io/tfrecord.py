"""TFRecord files and ``tf.train.Example`` / ``SequenceExample`` messages, without TensorFlow.

YouTube-8M ships its annotations as TFRecords. A record is framed as

    uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data

with TensorFlow's mask ``((crc >> 15) | (crc << 17)) + 0xa282ead8``. Both checksums are verified,
so a truncated or damaged file is a one-line :class:`~cmgh.errors.DataError` naming the file and
the record number, never a garbled example. The messages are decoded with ``protobuf`` from
descriptors built here (the fields of TensorFlow's ``example.proto`` and ``feature.proto``), in a
pool of their own, so TensorFlow is never imported and an installed TensorFlow does not clash.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from cmgh.errors import DataError
from cmgh.io import atomic_write

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")

Features = dict[str, bytes | list[bytes] | np.ndarray]


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C (Castagnoli) of ``data``."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The records of one TFRecord file, each checked against both of its checksums."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: missing: cannot open TFRecord file ({exc.strerror})") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        number = 0
        while header := fh.read(_HEADER.size):
            if len(header) < _HEADER.size:
                raise DataError(f"{path}: record {number}: truncated (header of {len(header)} of {_HEADER.size} bytes)")
            length, length_crc = _HEADER.unpack(header)
            if masked_crc(header[:8]) != length_crc:
                raise DataError(f"{path}: record {number}: corrupt (length checksum mismatch)")
            left = size - fh.tell() - _FOOTER.size
            if length > left:  # checked before anything is allocated: a length field is never trusted
                raise DataError(f"{path}: record {number}: truncated (its length field says {length} data bytes, {max(left, 0)} are left)")
            data = fh.read(length)
            footer = fh.read(_FOOTER.size)
            if len(data) < length or len(footer) < _FOOTER.size:
                raise DataError(f"{path}: record {number}: truncated ({len(data)} of {length} data bytes)")
            if masked_crc(data) != _FOOTER.unpack(footer)[0]:
                raise DataError(f"{path}: record {number}: corrupt (data checksum mismatch)")
            yield data
            number += 1


def frame(data: bytes) -> bytes:
    """One record's bytes in the TFRecord framing."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


def write_records(path: str | os.PathLike[str], records: Iterable[bytes]) -> Path:
    """A TFRecord file of ``records`` (uncompressed), written atomically."""
    target = Path(path)
    atomic_write(target, lambda fh: fh.writelines(frame(r) for r in records))
    return target


# --------------------------------------------------------------------------- tf.train messages

_F = descriptor_pb2.FieldDescriptorProto
_REPEATED = _F.LABEL_REPEATED


def _field(name: str, number: int, kind: int, label: int = 1, type_name: str | None = None, oneof: int | None = None) -> descriptor_pb2.FieldDescriptorProto:
    field = descriptor_pb2.FieldDescriptorProto(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    if label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED and kind in (_F.TYPE_FLOAT, _F.TYPE_INT64):
        field.options.packed = True
    return field


def _map(parent: descriptor_pb2.DescriptorProto, field: str, value_type: str) -> None:
    """A ``map<string, value_type> field = 1`` (protobuf's map-entry message plus a repeated field)."""
    entry = parent.nested_type.add(name=f"{field.title().replace('_', '')}Entry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_MESSAGE, type_name=value_type)])
    parent.field.append(_field(field, 1, _F.TYPE_MESSAGE, _REPEATED, f".tensorflow.{parent.name}.{entry.name}"))


@lru_cache(maxsize=1)
def _messages() -> dict[str, Any]:
    """Message classes with the wire layout of TensorFlow's ``Example`` and ``SequenceExample``."""
    proto = descriptor_pb2.FileDescriptorProto(name="cmgh/tensorflow_example.proto", package="tensorflow", syntax="proto3")
    for name, kind in (("BytesList", _F.TYPE_BYTES), ("FloatList", _F.TYPE_FLOAT), ("Int64List", _F.TYPE_INT64)):
        proto.message_type.add(name=name).field.append(_field("value", 1, kind, _REPEATED))
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
        feature.field.append(_field(name, number, _F.TYPE_MESSAGE, type_name=f".tensorflow.{type_name}", oneof=0))
    _map(proto.message_type.add(name="Features"), "feature", ".tensorflow.Feature")
    proto.message_type.add(name="FeatureList").field.append(_field("feature", 1, _F.TYPE_MESSAGE, _REPEATED, ".tensorflow.Feature"))
    _map(proto.message_type.add(name="FeatureLists"), "feature_list", ".tensorflow.FeatureList")
    proto.message_type.add(name="Example").field.append(_field("features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features"))
    sequence = proto.message_type.add(name="SequenceExample")
    sequence.field.extend([
        _field("context", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features"),
        _field("feature_lists", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.FeatureLists"),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{m.name}")) for m in proto.message_type}


def _value(feature: Any) -> list[bytes] | np.ndarray:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        return list(feature.bytes_list.value)
    if kind == "float_list":
        return np.asarray(feature.float_list.value, dtype=np.float32)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, dtype=np.int64)
    return []


def _parse(kind: str, data: bytes, where: str) -> Any:
    message = _messages()[kind]()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise DataError(f"{where}: corrupt: not a tf.train.{kind} ({exc})") from None
    return message


def parse_example(data: bytes, where: str = "<record>") -> Features:
    """A ``tf.train.Example``'s features: bytes lists as lists, float and int64 lists as arrays."""
    example = _parse("Example", data, where)
    return {name: _value(feature) for name, feature in example.features.feature.items()}


def parse_sequence_example(data: bytes, where: str = "<record>") -> tuple[Features, dict[str, list[list[bytes] | np.ndarray]]]:
    """A ``tf.train.SequenceExample``: its context features and, per feature list, one value per step."""
    sequence = _parse("SequenceExample", data, where)
    context = {name: _value(feature) for name, feature in sequence.context.feature.items()}
    lists = {name: [_value(f) for f in flist.feature] for name, flist in sequence.feature_lists.feature_list.items()}
    return context, lists


def encode_example(features: dict[str, list[bytes] | list[float] | list[int] | np.ndarray]) -> bytes:
    """A ``tf.train.Example`` from lists (bytes, float32 or int64 by the values' type): what the
    YouTube-8M generator writes, the inverse of :func:`parse_example`."""
    example = _messages()["Example"]()
    for name, values in features.items():
        _fill(example.features.feature[name], values)
    return example.SerializeToString(deterministic=True)  # map entries (feature names) in key order, not upb's per-process hash order


def encode_sequence_example(context: dict[str, Any], lists: dict[str, list[Any]]) -> bytes:
    sequence = _messages()["SequenceExample"]()
    for name, values in context.items():
        _fill(sequence.context.feature[name], values)
    for name, steps in lists.items():
        flist = sequence.feature_lists.feature_list[name]
        for values in steps:
            _fill(flist.feature.add(), values)
    return sequence.SerializeToString(deterministic=True)


def _fill(feature: Any, values: Any) -> None:
    array = np.asarray(values) if not (isinstance(values, list) and values and isinstance(values[0], bytes)) else None
    if array is None:
        feature.bytes_list.value.extend(values)
    elif array.dtype.kind == "f":
        feature.float_list.value.extend(array.astype(np.float32).tolist())
    elif array.dtype.kind in "iub":
        feature.int64_list.value.extend(array.astype(np.int64).tolist())
    elif array.dtype.kind == "S":
        feature.bytes_list.value.extend(array.tolist())
    else:
        raise ValueError(f"cannot encode values of dtype {array.dtype} as a tf.train.Feature")

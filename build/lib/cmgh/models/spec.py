"""What a model is built from, typed: the ``model`` config section and the input shapes from ``features``.

Neither object has default values of its own: the config schema is the one place for defaults, and
``from_config`` fills a partial section from it (a resolved config's section is already complete).
The model is built once from these, so the model package never reads the config tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cmgh.schema import fill_defaults, schema


def _plain(node: Any) -> Any:
    """A copy of a config node as plain dicts and lists (a :class:`cmgh.config.Config` section too)."""
    if isinstance(node, Mapping):
        return {key: _plain(node[key]) for key in node}
    if isinstance(node, (list, tuple)):
        return [_plain(value) for value in node]
    return node


def _section(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Config section ``name`` with the schema's defaults filled in."""
    tree = _plain(given)
    fill_defaults(schema()["properties"][name], tree)
    return tree


@dataclass(frozen=True)
class ModelSpec:
    """The ``model`` section: one backbone's tokenizers, Transformer and heads (``backbones`` is the run grid's, not a model's)."""

    width: int
    depth: int
    heads: int
    mlp_ratio: float
    dropout: float
    video_patch: tuple[int, int, int]
    audio_patch: int
    audio_tokenizer: str
    text_embed_dim: int
    droptoken: float
    va_dim: int
    vat_dim: int

    @classmethod
    def from_config(cls, model: Mapping[str, Any]) -> ModelSpec:
        """From the resolved ``model`` section (or a partial one: the schema's defaults fill the rest)."""
        section = _section("model", model)
        values = {f.name: section[f.name] for f in fields(cls)}
        values["video_patch"] = tuple(int(p) for p in values["video_patch"])
        for name in ("mlp_ratio", "dropout", "droptoken"):
            values[name] = float(values[name])
        for name in ("width", "depth", "heads", "audio_patch", "text_embed_dim", "va_dim", "vat_dim"):
            values[name] = int(values[name])
        return cls(**values)


@dataclass(frozen=True)
class ModelInputs:
    """The shapes a model is built for: clips ``(T, H, W)``, waveform samples, caption tokens, vocabulary."""

    video_shape: tuple[int, int, int]
    audio_samples: int
    audio_sample_rate: int  # read by the ``logmel`` audio tokenizer only
    max_tokens: int
    vocab_size: int

    @classmethod
    def from_config(cls, features: Mapping[str, Any], vocab_size: int | None = None) -> ModelInputs:
        """From the resolved ``features`` section (or a partial one, filled by the schema): clips of
        ``frames x size x size``, ``round(sample_rate * frames / fps)`` waveform samples (the clip's
        duration), ``text.max_tokens``; ``vocab_size`` (the loaded vocabulary's, which the data
        loader knows) wins over ``text.vocab_size``."""
        section = _section("features", features)
        video, text = section["video"], section["text"]
        frames, size, fps = int(video["frames"]), int(video["size"]), float(video["fps"])
        rate = int(section["audio"]["sample_rate"])
        return cls(
            video_shape=(frames, size, size),
            audio_samples=int(round(rate * frames / fps)),
            audio_sample_rate=rate,
            max_tokens=int(text["max_tokens"]),
            vocab_size=int(vocab_size or text["vocab_size"]),
        )

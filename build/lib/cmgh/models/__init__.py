"""VATT models: tokenizers, ``ms``/``ma`` Transformer backbones, fine-and-coarse heads (no training logic)."""

from cmgh.models.backbones import BACKBONES, Backbone, Block, ModalityAgnostic, ModalitySpecific, Tail, Transformer
from cmgh.models.heads import FineCoarseHeads
from cmgh.models.spec import ModelInputs, ModelSpec
from cmgh.models.tokenizers import LogMelTokenizer, TextTokenizer, VideoTokenizer, WaveformTokenizer, drop_tokens
from cmgh.models.vatt import VATT, build_model

__all__ = [
    "BACKBONES",
    "Backbone",
    "Block",
    "FineCoarseHeads",
    "LogMelTokenizer",
    "ModalityAgnostic",
    "ModalitySpecific",
    "ModelInputs",
    "ModelSpec",
    "Tail",
    "TextTokenizer",
    "Transformer",
    "VATT",
    "VideoTokenizer",
    "WaveformTokenizer",
    "build_model",
    "drop_tokens",
]

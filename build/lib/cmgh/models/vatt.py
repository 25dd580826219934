"""VATT: Video-Audio-Text Transformer (Akbari et al., NeurIPS 2021), the model CMGH trains.

:class:`VATT` = tokenizers (:mod:`.tokenizers`) + a backbone (:mod:`.backbones`, ``ms`` or ``ma``)
+ fine-and-coarse heads (:mod:`.heads`). It knows nothing about training: ``encode`` gives the
modality representations, ``heads`` the common-space embeddings, and the trainer decides what to
do with them. The split between the two is the *meeting point* of CMGH: both objectives read the
same ``video_rep``, so the trainer can take per-sample gradients there (through the small heads
only) before running one backward pass through the backbone (:mod:`cmgh.harmonize.gradients`).

Batch keys read: ``video`` uint8 ``[B,T,H,W,3]``, ``audio`` float ``[B,S]``, ``text`` int64
``[B,K,L]`` (0 = padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from cmgh.models.backbones import Tail, build_backbone
from cmgh.models.heads import FineCoarseHeads
from cmgh.models.spec import ModelInputs, ModelSpec
from cmgh.models.tokenizers import LogMelTokenizer, TextTokenizer, VideoTokenizer, WaveformTokenizer, drop_tokens


class VATT(nn.Module):
    """Tokenizers + backbone + heads.

    Args:
        spec: the ``model`` config section (:class:`ModelSpec`).
        backbone: ``"ms"`` (modality-specific) or ``"ma"`` (modality-agnostic, shared Transformer).
        inputs: the clip, waveform and caption shapes and the vocabulary (:class:`ModelInputs`;
            ids ``0`` = padding, ``1`` = unknown).
    """

    def __init__(self, spec: ModelSpec, backbone: str, inputs: ModelInputs) -> None:
        super().__init__()
        width = spec.width
        self.backbone_name = backbone
        self.droptoken = spec.droptoken
        self.video_tok = VideoTokenizer(width, spec.video_patch, inputs.video_shape)
        if spec.audio_tokenizer == "logmel":
            self.audio_tok: nn.Module = LogMelTokenizer(width, spec.audio_patch, inputs.audio_samples, inputs.audio_sample_rate)
        else:
            self.audio_tok = WaveformTokenizer(width, spec.audio_patch, inputs.audio_samples)
        self.text_tok = TextTokenizer(width, inputs.vocab_size, spec.text_embed_dim, inputs.max_tokens)
        self.backbone = build_backbone(backbone, width, spec.depth, spec.heads, spec.mlp_ratio, spec.dropout)
        self.head = FineCoarseHeads(width, spec.va_dim, spec.vat_dim)
        self.width = width

    # -- per-modality representations ---------------------------------------------------------
    def video_rep(self, video: Tensor, hidden_blocks: int = 0) -> tuple[Tensor, Tensor | None]:
        tokens = self.video_tok(video)
        if self.training:
            tokens = drop_tokens(tokens, self.droptoken)
        return self.backbone("video", tokens, None, hidden_blocks)

    def audio_rep(self, audio: Tensor) -> Tensor:
        tokens = self.audio_tok(audio)
        if self.training:
            tokens = drop_tokens(tokens, self.droptoken)
        return self.backbone("audio", tokens)[0]

    def text_rep(self, text: Tensor) -> Tensor:
        """``[..., L]`` ids -> ``[..., D]``; padding (id 0) is masked out of attention.

        DropToken is not applied to text (captions are short and padded; VATT drops video and
        audio tokens).
        """
        lead = text.shape[:-1]
        tokens, mask = self.text_tok(text.reshape(-1, text.shape[-1]))
        return self.backbone("text", tokens, mask)[0].reshape(*lead, self.width)

    # -- training interface -------------------------------------------------------------------
    def encode(self, batch: Mapping[str, Tensor], hidden_blocks: int = 0) -> dict[str, Tensor]:
        """Representations: ``video_rep [B,D]`` (read by both heads), ``audio_rep [B,D]``, ``text_rep [B,K,D]``.

        With ``hidden_blocks = k > 0`` also ``video_hidden [B,1+N,D]``: the input of the video
        pathway's last ``k`` blocks (see :meth:`video_tail`).
        """
        video_rep, hidden = self.video_rep(batch["video"], hidden_blocks)
        out = {"video_rep": video_rep, "audio_rep": self.audio_rep(batch["audio"]), "text_rep": self.text_rep(batch["text"])}
        if hidden is not None:
            out["video_hidden"] = hidden
        return out

    def heads(self, reps: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Common-space embeddings ``z_va_video, z_va_audio [B,va_dim]``, ``z_vat_video [B,vat_dim]``, ``z_vat_text [B,K,vat_dim]``."""
        return self.head(reps["video_rep"], reps["audio_rep"], reps["text_rep"])

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        reps = self.encode(batch)
        return {**reps, **self.heads(reps)}

    def video_tail(self, blocks: int) -> Tail:
        """The last ``blocks`` blocks (+ final norm, [AGG] readout) of the video pathway.

        For ``ms`` these belong to the video Transformer, for ``ma`` to the shared one.
        ``tail(encode(batch, hidden_blocks=blocks)["video_hidden"])`` equals ``video_rep``.
        """
        return Tail(self.backbone.transformer("video"), blocks)

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters both objectives' gradients reach: everything upstream of ``video_rep``.

        The video tokenizer, the video ``[AGG]`` token and the Transformer that serves video (in
        ``ma`` that one also serves audio and text, so its gradients collect all three
        modalities' contributions). The ``all_parameters`` meeting point
        (:mod:`cmgh.harmonize.ghost`) compares the two objectives over exactly these.
        """
        owners = {id(p) for p in (*self.video_tok.parameters(), self.backbone.agg["video"], *self.backbone.transformer("video").parameters())}
        return {name: p for name, p in self.named_parameters() if id(p) in owners}

    # -- downstream evaluation ----------------------------------------------------------------
    def embed_video(self, video: Tensor, space: str = "rep") -> Tensor:
        """``space``: ``rep`` (backbone output, for linear probes), ``va`` or ``vat`` (retrieval)."""
        return self._project("video", self.video_rep(video)[0], space)

    def embed_audio(self, audio: Tensor, space: str = "rep") -> Tensor:
        """``space``: ``rep`` or ``va``."""
        return self._project("audio", self.audio_rep(audio), space)

    def embed_text(self, text: Tensor, space: str = "vat") -> Tensor:
        """``[..., L]`` ids -> ``[..., vat_dim]`` (``vat``) or ``[..., D]`` (``rep``)."""
        return self._project("text", self.text_rep(text), space)

    def _project(self, modality: str, rep: Tensor, space: str) -> Tensor:
        """Apply the head layers that lead from a modality's representation into ``space``."""
        chains = _SPACES[modality]
        if space not in chains:
            raise ValueError(f"unknown space {space!r} (expected {' or '.join(chains)})")
        for layer in chains[space]:
            rep = getattr(self.head, layer)(rep)
        return rep


# modality -> space -> the head layers from its representation into that space (fine and coarse, VATT)
_SPACES: dict[str, dict[str, tuple[str, ...]]] = {
    "video": {"rep": (), "va": ("video_va",), "vat": ("video_va", "va_vat")},
    "audio": {"rep": (), "va": ("audio_va",)},
    "text": {"rep": (), "vat": ("text_vat",)},
}


def build_model(cfg: Mapping[str, Any], backbone: str, vocab_size: int | None = None) -> VATT:
    """:class:`VATT` from a resolved config: its ``model`` section and the shapes its ``features``
    give (:meth:`ModelInputs.from_config`; ``vocab_size``, the loaded vocabulary's, wins)."""
    return VATT(ModelSpec.from_config(cfg["model"]), backbone, ModelInputs.from_config(cfg["features"], vocab_size))

"""VATT's "fine and coarse" projection heads (VATT Sec. 3.2, "Common space projection").

Video and audio meet in a fine-grained video-audio space ``S_va`` (``va_dim``); text meets video
in a coarser video-audio-text space ``S_vat`` (``vat_dim``), reached by the video *from* ``S_va``:

    z_va_video  = g_{v->va}(video_rep)            linear
    z_va_audio  = g_{a->va}(audio_rep)            linear
    z_vat_video = g_{va->vat}(z_va_video)         two-layer MLP with ReLU
    z_vat_text  = g_{t->vat}(text_rep)            linear

VATT puts a batch normalisation inside the two-layer projection; it is left out here on purpose:
batch statistics would couple the samples and break the per-sample gradients the harmonization
needs (sample ``i``'s head output must depend only on sample ``i``).
"""

from __future__ import annotations

from torch import Tensor, nn


class FineCoarseHeads(nn.Module):
    def __init__(self, width: int, va_dim: int, vat_dim: int) -> None:
        super().__init__()
        self.video_va = nn.Linear(width, va_dim)
        self.audio_va = nn.Linear(width, va_dim)
        self.va_vat = nn.Sequential(nn.Linear(va_dim, va_dim), nn.ReLU(), nn.Linear(va_dim, vat_dim))
        self.text_vat = nn.Linear(width, vat_dim)

    def forward(self, video_rep: Tensor, audio_rep: Tensor, text_rep: Tensor) -> dict[str, Tensor]:
        z_va_video = self.video_va(video_rep)
        return {
            "z_va_video": z_va_video,
            "z_va_audio": self.audio_va(audio_rep),
            "z_vat_video": self.va_vat(z_va_video),
            "z_vat_text": self.text_vat(text_rep),
        }

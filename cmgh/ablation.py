"""The results trees of a noise ablation (config/ablation.yaml, config/study.yaml): one per injected
noise setting, named and given its noise rates here, once, for the workflow (which builds the trees)
and the report (which finds each tree's setting again from the config its runs wrote)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cmgh.errors import DataError

BOTH, TEXT, AUDIO = "both", "text", "audio"
MODALITIES = (BOTH, TEXT, AUDIO)  # ablation.modalities: which pairs of a triplet a rate misaligns


@dataclass(frozen=True)
class NoiseSetting:
    """One tree's injected noise: ``rate`` of the pre-training triplets misaligned in ``modality``
    (the clean tree, rate 0, is ``both``: it is the rate-0 point of every modality's curve)."""

    modality: str
    rate: float

    @property
    def name(self) -> str:
        """The tree's folder under ``ablation.root``: ``noise0.3`` (both), ``text0.2``, ``audio0.4``, ``noise0`` (clean)."""
        return f"{'noise' if self.modality == BOTH else self.modality}{self.rate:g}"

    @property
    def audio_rate(self) -> float:
        return self.rate if self.modality in (BOTH, AUDIO) else 0.0

    @property
    def text_rate(self) -> float:
        return self.rate if self.modality in (BOTH, TEXT) else 0.0

    def on(self, modality: str) -> bool:
        """Whether this tree is a point of ``modality``'s curve (the clean tree is on every one)."""
        return self.rate == 0 or self.modality == modality


def settings(rates: Iterable[float], modalities: Iterable[str]) -> list[NoiseSetting]:
    """Every tree of an ablation: the clean one once (when 0 is among the rates), every other rate
    once per modality, by modality then rate."""
    rates = sorted({float(r) for r in rates})
    out = [NoiseSetting(BOTH, 0.0)] if 0.0 in rates else []
    return out + [NoiseSetting(m, r) for m in modalities for r in rates if r > 0]


def setting_of(audio_rate: float, text_rate: float, where: object = "the tree") -> NoiseSetting:
    """The setting that injected these rates (as a tree's runs recorded them in their config)."""
    audio_rate, text_rate = float(audio_rate), float(text_rate)
    if audio_rate == text_rate:
        return NoiseSetting(BOTH, audio_rate)
    if audio_rate == 0:
        return NoiseSetting(TEXT, text_rate)
    if text_rate == 0:
        return NoiseSetting(AUDIO, audio_rate)
    raise DataError(f"{where}: data.noise.audio_rate {audio_rate:g} and text_rate {text_rate:g} differ and neither is 0; "
                    "expected one ablation setting (both equal, or one of them 0)")

"""Latent concepts shared by the five generated datasets, and their renderers.

A concept is what the mini world is *about*: it fixes a visual pattern (shape, hue, texture and
a motion), a sound (pitch, harmonic profile, rhythm) and a small invented vocabulary. Every
dataset draws its clips from the same concepts with fresh nuisance on top (position, start time,
colour and gain jitter, background texture and noise), so a representation that captures the
concepts in pre-training transfers to classification, tagging and retrieval downstream.

The signals are built to survive the feature pipeline (32x32 pixels, 8 frames at 4 fps, 8 kHz
audio): hue and shape are large-scale, pitches stay below 3 kHz, motions are slow enough to be seen
at 4 fps. Everything is numpy-vectorised: rendering a 2 s clip takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHAPES = ("disk", "square", "ring", "cross", "diamond", "stripes")
FILLER = (
    "so", "now", "we", "the", "just", "and", "then", "you", "a", "it", "is", "this", "okay",
    "going", "to", "here", "um", "right", "with", "of", "little", "bit", "let's", "see",
)  # fmt: skip
DESCRIBE = (
    ("a", "{0}", "is", "{1}", "the", "{2}"),
    ("someone", "shows", "a", "{0}", "{1}"),
    ("the", "{0}", "and", "a", "{1}", "{2}"),
    ("a", "video", "of", "{0}", "{1}", "in", "the", "{2}"),
    ("there", "is", "a", "{1}", "{0}"),
    ("{0}", "{2}", "with", "a", "{1}"),
)  # fmt: skip
_ONSETS = ("b", "bl", "br", "d", "dr", "f", "fl", "g", "gr", "k", "kl", "m", "n", "p", "pl", "pr",
           "s", "sk", "sl", "sn", "t", "tr", "v", "w", "z")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "ai", "ou")
_CODAS = ("", "", "b", "d", "g", "k", "l", "m", "n", "p", "rp", "rk", "sh", "t", "x", "zz", "mp", "nd")


@dataclass(frozen=True)
class Concept:
    """One latent concept: how it looks, moves, sounds and is talked about."""

    index: int
    name: str  # human-readable, e.g. "blarp kettoo" (Kinetics label, AudioSet display name)
    words: tuple[str, ...]  # invented vocabulary used in captions
    hue: float  # 0..1
    shape: str
    stripes: float  # spatial frequency of the inner texture (cycles per object)
    direction: float  # radians
    speed: float  # frame widths per second
    size: float  # object radius as a fraction of the frame
    pitch: float  # base frequency, Hz
    harmonics: tuple[float, float, float]  # relative weights of harmonics 1..3 (timbre)
    am_rate: float  # amplitude-modulation (rhythm) rate, Hz


def _word(rng: np.random.Generator) -> str:
    syllables = 1 + int(rng.random() < 0.5)
    parts = []
    for s in range(syllables):
        coda = _CODAS[rng.integers(len(_CODAS))] if s == syllables - 1 else ""
        parts.append(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] + coda)
    return "".join(parts)


def build_concepts(n: int, seed: int, words_per_concept: int = 5) -> list[Concept]:
    """``n`` distinct concepts from ``seed`` (same seed, same concepts; independent of dataset sizes).

    Distinctness is by construction, not by luck: hues, pitches and motion directions are evenly
    spaced and then shuffled (with a little jitter), and no word is shared between concepts.
    """
    rng = np.random.default_rng([int(seed), 7919])
    hue = (rng.permutation(n) + rng.uniform(-0.15, 0.15, n)) / n % 1.0
    pitch = 220.0 * 2.0 ** (2.2 * (rng.permutation(n) + rng.uniform(-0.2, 0.2, n)) / max(n - 1, 1))
    direction = 2 * np.pi * (rng.permutation(n) + rng.uniform(-0.2, 0.2, n)) / n
    shapes = rng.permutation(np.resize(np.arange(len(SHAPES)), n))
    am = rng.permutation(np.linspace(1.0, 6.0, n))
    taken: set[str] = set(FILLER) | {w for t in DESCRIBE for w in t if "{" not in w}
    concepts = []
    for k in range(n):
        words: list[str] = []
        while len(words) < words_per_concept:
            w = _word(rng)
            if len(w) >= 3 and w not in taken:
                taken.add(w)
                words.append(w)
        weights = rng.dirichlet(np.ones(3))
        concepts.append(
            Concept(
                index=k,
                name=f"{words[0]} {words[1]}",
                words=tuple(words),
                hue=float(hue[k]),
                shape=SHAPES[int(shapes[k])],
                stripes=float(rng.uniform(1.5, 3.0)),
                direction=float(direction[k]),
                speed=float(rng.uniform(0.15, 0.35)),
                size=float(rng.uniform(0.16, 0.24)),
                pitch=float(pitch[k]),
                harmonics=(float(0.4 + 0.6 * weights[0]), float(weights[1]), float(weights[2])),
                am_rate=float(am[k]),
            )
        )
    return concepts


# --------------------------------------------------------------------------------------------
# video


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 1]; the last axis of the result is RGB."""
    h = np.asarray(h, dtype=np.float32) % 1.0
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + h[..., None] * 6.0) % 6.0
    return np.asarray(v)[..., None] - np.asarray(v)[..., None] * np.asarray(s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _shape_alpha(c: Concept, dx: np.ndarray, dy: np.ndarray, radius: float, pixels: float) -> np.ndarray:
    """Soft (anti-aliased) coverage of the concept's shape at offsets ``dx, dy`` from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    dist = np.sqrt(dx * dx + dy * dy)
    if c.shape == "disk" or c.shape == "stripes":
        sdf = dist - radius
    elif c.shape == "square":
        sdf = np.maximum(ax, ay) - 0.85 * radius
    elif c.shape == "ring":
        sdf = np.abs(dist - 0.75 * radius) - 0.3 * radius
    elif c.shape == "cross":
        arm = 0.35 * radius
        sdf = np.minimum(np.maximum(ax - radius, ay - arm), np.maximum(ay - radius, ax - arm))
    else:  # diamond
        sdf = (ax + ay) / 1.25 - radius
    alpha = np.clip(0.5 - sdf * pixels, 0.0, 1.0)
    if c.shape == "stripes":
        # Stripes across the motion direction: the texture itself carries the concept.
        u = dx * np.cos(c.direction) + dy * np.sin(c.direction)
        alpha = alpha * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * c.stripes * u / radius)))
    return alpha


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dim, smooth, randomly coloured texture (bilinear upsampling of a 4x4 grid): [H,W,3]."""
    grid = _hsv_to_rgb(rng.random((4, 4)), rng.uniform(0.1, 0.5, (4, 4)), rng.uniform(0.15, 0.45, (4, 4)))
    ys = np.linspace(0, 3, height, dtype=np.float32)
    xs = np.linspace(0, 3, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), 2)
    x0 = np.minimum(xs.astype(int), 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return ((1 - fy) * ((1 - fx) * g00 + fx * g01) + fy * ((1 - fx) * g10 + fx * g11)).astype(np.float32)


def render_video(
    concepts: Concept | Sequence[Concept],
    rng: np.random.Generator,
    seconds: float,
    fps: int,
    width: int,
    height: int,
) -> np.ndarray:
    """Frames showing the concept(s) moving over a textured background: uint8 [T,H,W,3].

    Nuisance: background texture, object start position (the motion wraps around the frame),
    colour and size jitter, a small speed jitter, per-pixel noise and, in half of the clips, a
    smaller distractor object of random colour, shape and motion. Several concepts (AudioSet
    mixtures) are drawn as separate objects at independent positions.
    """
    group = [concepts] if isinstance(concepts, Concept) else list(concepts)
    num = max(1, int(round(seconds * fps)))
    t = (np.arange(num, dtype=np.float32) / fps)[:, None, None]
    aspect = width / height
    yy = ((np.arange(height, dtype=np.float32) + 0.5) / height)[None, :, None]
    xx = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, None, :] * aspect
    img = np.broadcast_to(_background(rng, height, width), (num, height, width, 3)).copy()
    # Half of the clips also show a distractor: a random shape in a random colour, moving randomly.
    if rng.random() < 0.5:
        distractor = Concept(
            index=-1, name="", words=(), hue=float(rng.random()), shape=SHAPES[int(rng.integers(len(SHAPES)))],
            stripes=2.0, direction=float(rng.uniform(0, 2 * np.pi)), speed=float(rng.uniform(0.1, 0.4)),
            size=float(rng.uniform(0.1, 0.16)), pitch=0.0, harmonics=(1.0, 0.0, 0.0), am_rate=0.0,
        )  # fmt: skip
        group = [distractor, *group]
    for c in group:
        cx0, cy0 = rng.random(2)
        speed = c.speed * rng.uniform(0.8, 1.2)
        cx = (cx0 + speed * np.cos(c.direction) * t) % 1.0 * aspect
        cy = (cy0 + speed * np.sin(c.direction) * t) % 1.0
        # Offsets on the torus, so an object leaving one side re-enters on the other.
        dx = (xx - cx + aspect / 2) % aspect - aspect / 2
        dy = (yy - cy + 0.5) % 1.0 - 0.5
        radius = c.size * rng.uniform(0.85, 1.15)
        alpha = _shape_alpha(c, dx, dy, radius, pixels=float(height))[..., None]
        colour = _hsv_to_rgb(c.hue + rng.uniform(-0.025, 0.025), rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
        img = img * (1 - alpha) + alpha * colour.astype(np.float32)
    img += rng.normal(0.0, 0.04, img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# audio


def render_audio(
    concepts: Concept | Sequence[Concept],
    rng: np.random.Generator,
    seconds: float,
    sample_rate: int,
) -> np.ndarray:
    """The concept(s)' sound plus background noise: float32 [round(seconds*rate)] in [-1, 1].

    Each concept is a harmonic tone (its pitch and timbre) pulsing at its rhythm rate. Nuisance:
    gain, a small pitch detune, random phases, a distractor hum at a random pitch and white noise.
    """
    group = [concepts] if isinstance(concepts, Concept) else list(concepts)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = np.zeros(n, dtype=np.float64)
    nyquist = 0.45 * sample_rate
    for c in group:
        f0 = c.pitch * rng.uniform(0.98, 1.02)
        tone = np.zeros(n)
        for h, weight in enumerate(c.harmonics, start=1):
            if f0 * h < nyquist:
                tone += weight * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * c.am_rate * t + rng.uniform(0, 2 * np.pi))
        wave += rng.uniform(0.5, 1.0) * tone * envelope / sum(c.harmonics)
    wave /= max(1.0, np.sqrt(len(group)))
    hum = rng.uniform(0.0, 0.25) * np.sin(2 * np.pi * rng.uniform(60, 3000) * t + rng.uniform(0, 2 * np.pi))
    noise = rng.normal(0.0, rng.uniform(0.02, 0.08), n)
    wave = 0.6 * wave + hum + noise
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# text


def make_caption(concept: Concept, rng: np.random.Generator, style: str = "asr") -> str:
    """A caption about ``concept``.

    ``asr``: rambling speech-like text (HowTo100M): filler words with two or three concept words.
    ``describe``: a short description (MSR-VTT) from varied templates of three concept words.
    """
    if style == "describe":
        template = DESCRIBE[rng.integers(len(DESCRIBE))]
        picks = rng.choice(len(concept.words), 3, replace=False)
        return " ".join(w.format(*(concept.words[i] for i in picks)) for w in template)
    if style != "asr":
        raise ValueError(f"style {style!r} is not one of asr, describe")
    fillers = [FILLER[i] for i in rng.integers(len(FILLER), size=int(rng.integers(3, 7)))]
    content = [concept.words[i] for i in rng.choice(len(concept.words), int(rng.integers(2, 4)), replace=False)]
    words = fillers + content
    order = rng.permutation(len(words))
    return " ".join(words[i] for i in order)

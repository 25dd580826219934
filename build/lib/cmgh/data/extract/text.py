"""Word-level vocabulary built from the pre-training captions, saved beside the features.

VATT embeds words from a fixed vocabulary (2^16 entries at paper scale); the downstream text
(MSR-VTT captions) is tokenized with the same vocabulary so the text tower transfers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cmgh.errors import DataError
from cmgh.io import atomic_write_json

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Vocabulary:
    """Token <-> id mapping with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, tokens: list[str]) -> None:
        if tokens[:2] != [PAD, UNK]:
            raise DataError(f"vocabulary must start with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        self.tokens = tokens
        self.ids = {tok: i for i, tok in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], size: int, min_count: int = 1) -> "Vocabulary":
        """Most frequent words first (ties alphabetical, so the result is deterministic)."""
        counts = Counter(w for text in texts for w in words(text))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *ranked[: max(0, size - 2)]])

    def encode(self, text: str, max_tokens: int) -> np.ndarray:
        ids = [self.ids.get(w, UNK_ID) for w in words(text)][:max_tokens]
        out = np.full(max_tokens, PAD_ID, dtype=np.int32)
        out[: len(ids)] = ids
        return out

    def encode_many(self, texts: Iterable[str], max_tokens: int) -> np.ndarray:
        rows = [self.encode(t, max_tokens) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, max_tokens), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i != PAD_ID)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, {"tokens": self.tokens})

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """The vocabulary saved at ``path``; anything but a JSON object whose ``tokens`` is a list of
        distinct strings starting with ``<pad>``, ``<unk>`` is one DataError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary not found (run `cmgh data vocab` first)")

        def bad(detail: str) -> DataError:
            return DataError(f'{path}: not a vocabulary file ({detail}; expected JSON {{"tokens": ["{PAD}", "{UNK}", words...]}} as `cmgh data vocab` writes it)')

        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise bad(f"byte {exc.start}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise bad(f"line {exc.lineno} column {exc.colno}: not valid JSON, {exc.msg}") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise bad("no 'tokens' list")
        first: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok:
                raise bad(f"tokens[{i}]: {tok!r} is not a non-empty string")
            if first.setdefault(tok, i) != i:
                raise bad(f"tokens[{i}]: {tok!r} appears twice, first at tokens[{first[tok]}]")
        if tokens[:2] != [PAD, UNK]:
            raise bad(f"the tokens start with {tokens[:2]}")
        return cls(tokens)

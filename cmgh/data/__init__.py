"""Data: the five datasets' real formats, the mini-world generator, media decoding and features.

Kept import-free so that ``import cmgh.data.formats`` does not pull in PyAV or torch, and so that
the CLI can name the datasets without importing pandas. ``DATASETS`` (the dataset names, in the
order that seeds each dataset's random stream) is the schema's ``data.datasets`` enum, read on
first use and then kept, so every importer holds the same tuple.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "DATASETS":
        from cmgh.config import choices

        names: tuple[str, ...] = choices("data.datasets")
        globals()["DATASETS"] = names
        return names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

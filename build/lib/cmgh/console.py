"""What the command line accepts and prints: argument types checked by argparse (exit 2 naming the
option) and log lines with URL passwords masked."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable

from cmgh.io import redacted


def bounded(kind: type[int] | type[float], low: float, high: float | None = None) -> Callable[[str], int | float]:
    """An argparse ``type``: a finite ``kind`` in ``[low, high]`` (argparse names the option and exits 2)."""
    what = {(int, 1): "a positive integer", (int, 0): "a non-negative integer"}.get((kind, low)) or (
        f"a number in [{low:g}, {high:g}]" if high is not None else f"a number >= {low:g}"
    )

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse's "invalid <name> value" wording when the type itself raises
    return parse


POSITIVE, NON_NEGATIVE, FRACTION = bounded(int, 1), bounded(int, 0), bounded(float, 0.0, 1.0)


class RedactingFormatter(logging.Formatter):
    """Log lines with URL passwords masked (the tracker's and every library's warnings alike)."""

    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))

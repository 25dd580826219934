"""``noise_labels.csv``: the generated ground truth of a pre-training corpus's noise (which clips'
audio and text are misaligned). No training code reads it: only the noise-detection evaluation and
the oracle control do.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmgh import layout
from cmgh.data.io.tables import as_flag, as_float, as_text, parse_csv, read_text, seconds, write_csv
from cmgh.layout import PathLike

NOISE_COLUMNS = ("video_id", "clip_start", "clip_end", "audio_aligned", "text_aligned")


def write_noise_labels(path: PathLike, table: pd.DataFrame) -> Path:
    rows = (
        (r.video_id, seconds(r.clip_start), seconds(r.clip_end), int(r.audio_aligned), int(r.text_aligned))
        for r in table.itertuples(index=False)
    )
    return write_csv(path, NOISE_COLUMNS, rows)


def read_noise_labels(path: PathLike) -> pd.DataFrame:
    """Ground truth of the pre-training noise: for the noise-detection evaluation only."""
    path, text = read_text(path, f"noise labels ({layout.NOISE_LABELS})")
    parsers = {"video_id": as_text, "clip_start": as_float, "clip_end": as_float, "audio_aligned": as_flag, "text_aligned": as_flag}
    table = parse_csv(path, text, NOISE_COLUMNS, parsers)
    return table.astype({"clip_start": "float64", "clip_end": "float64", "audio_aligned": "int64", "text_aligned": "int64"})

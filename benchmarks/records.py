"""Reading YouTube-8M's video-level records: ``cmgh.data.datasets.youtube8m_format.read_records`` against the
independent ``tfrecord`` package's loader on the same file, in the same run.

One file of the real release's size (~1,000 videos of 1,152 float32 means: a ~4.7 MB
``trainNNNN.tfrecord``; 3,844 such files per split). Ours checks both CRCs of every record and
parses the full ``tf.train.Example`` into a table with ids and labels; the ``tfrecord`` loader
skips the CRCs. The figure is the ratio of the two (best of 3) and videos/s per core, so a
full scan of the 6.1M videos costs ``6.1M / rate`` core-seconds.

    .venv/bin/python benchmarks/records.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tfrecord.reader

from cmgh import layout
from cmgh.data.datasets import youtube8m_format as yt8m

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_metrics import best_of  # noqa: E402  (the benchmarks' one timer: best of 3)

VIDEOS = 1_000


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = layout.youtube8m_record(Path(tmp), "train", 0)
        examples = (
            yt8m.encode_video(f"{i:04d}"[-4:], sorted(rng.choice(3862, 3, replace=False)),
                                   rng.random(yt8m.RGB_DIM), rng.random(yt8m.AUDIO_DIM))
            for i in range(VIDEOS)
        )
        yt8m.write_records(path, examples)
        size = path.stat().st_size
        ours = best_of(lambda: yt8m.read_records(path))
        theirs = best_of(lambda: sum(1 for _ in tfrecord.reader.tfrecord_loader(str(path), None, ["id", "labels", "mean_rgb", "mean_audio"])))
    print(f"one record file: {VIDEOS} videos, {size / 1e6:.2f} MB ({size / VIDEOS / 1e3:.2f} kB per video)")
    print(f"cmgh read_records (both CRCs, full parse, table): {ours * 1e3:.1f} ms = {VIDEOS / ours:,.0f} videos/s")
    print(f"tfrecord.reader.tfrecord_loader (no CRC check):   {theirs * 1e3:.1f} ms = {VIDEOS / theirs:,.0f} videos/s")
    print(f"6.1M videos (the 2018 release) at this rate: {6.1e6 / (VIDEOS / ours) / 60:.1f} core-minutes")
    print(f"cmgh / tfrecord time ratio: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()

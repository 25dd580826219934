"""What a larger Kinetics validation split costs: the default world with ``val_per_class`` 3 (24 clips,
one clip = 4.17 top-1 points) against 12 (96 clips, 1.04 points), same run.

For each size, in a temp folder: generate the Kinetics clips (HowTo100M at 12 videos, only for the
vocabulary), extract them, then time the Kinetics evaluation (linear probe on a random-init encoder,
no feature cache: what every sweep trial's validation and every evaluation job runs). Prints the
seconds per stage and, last, the evaluation's time ratio.

    .venv/bin/python benchmarks/val_split.py [--small 3] [--large 12] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.evaluate import fake_checkpoint  # noqa: E402
from cmgh import config as config_mod  # noqa: E402
from cmgh.evaluate.run import evaluate  # noqa: E402


def measure(root: Path, per_class: int, repeats: int) -> dict[str, float]:
    """Seconds to generate, extract and evaluate (best of ``repeats``) a world of ``per_class`` val clips per class."""
    from cmgh.data.extract import decoded
    from cmgh.data.synth.generate import synthesize

    cfg = config_mod.load(overrides=[f"paths.data={root / 'data'}", f"paths.features={root / 'features'}", f"paths.results={root / 'results'}",
                                     "data.synth.howto100m.videos=12", f"data.synth.kinetics.val_per_class={per_class}"])
    synthesize(cfg, datasets=["howto100m"], progress=False)
    decoded.build_vocab(cfg)
    t0 = time.perf_counter()
    synthesize(cfg, datasets=["kinetics"], progress=False)
    t1 = time.perf_counter()
    decoded.extract(cfg, "kinetics")
    t2 = time.perf_counter()
    run = fake_checkpoint(cfg, root / "run")
    seconds, n_val, top1 = [], 0, 0.0
    for i in range(repeats):
        out = root / f"eval{i}"
        start = time.perf_counter()
        payload = evaluate(cfg, "kinetics", run, out)
        seconds.append(time.perf_counter() - start)
        n_val, top1 = payload["params"]["n_val"], payload["val_top1"]
        shutil.rmtree(out)
    return {"n_val": n_val, "synth_s": t1 - t0, "extract_s": t2 - t1, "evaluate_s": min(seconds), "val_top1": top1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=3, help="val clips per class of the smaller split (the old default)")
    parser.add_argument("--large", type=int, default=12, help="val clips per class of the larger split (the new default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (an evaluation job runs with 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        for per_class in (args.small, args.large):
            rows[per_class] = r = measure(Path(tmp_name) / f"val{per_class}", per_class, args.repeats)
            print(f"val_per_class {per_class}: {r['n_val']} val clips (resolution {100 / r['n_val']:.2f} top-1 points), "
                  f"generate {r['synth_s']:.1f} s, extract {r['extract_s']:.1f} s, evaluate {r['evaluate_s']:.2f} s "
                  f"(best of {args.repeats}; random-init val_top1 {r['val_top1']:.2f})")
    small, large = rows[args.small], rows[args.large]
    print(f"generate + extract, {large['n_val']} vs {small['n_val']} val clips: "
          f"{(large['synth_s'] + large['extract_s']) / (small['synth_s'] + small['extract_s']):.2f}x")
    print(f"kinetics evaluation time, {large['n_val']} vs {small['n_val']} val clips: {large['evaluate_s'] / small['evaluate_s']:.2f}x "
          f"(+{large['evaluate_s'] - small['evaluate_s']:.2f} s per evaluation)")


if __name__ == "__main__":
    main()

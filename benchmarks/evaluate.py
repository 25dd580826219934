"""Where an evaluation spends its time: metric computation vs encoder forward passes (same run).

Runs the Kinetics task (linear probe) on the default config's features if they exist under
``results/features`` (else on a tiny generated world in a temp folder), with a random-init
encoder (no checkpoint needed) and an empty output folder (no feature cache), then prints the
phases' seconds and, last, ``metrics / forward time``. Also times ``retrieval_metrics`` on a
10k x 10k similarity matrix against one row-wise ``torch.sort`` (via ``benchmarks/retrieval_metrics.py``).

    .venv/bin/python benchmarks/evaluate.py [--skip-retrieval]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cmgh import config as config_mod  # noqa: E402
from cmgh.evaluate.metrics import retrieval_metrics  # noqa: E402
from cmgh.evaluate.run import evaluate  # noqa: E402
from cmgh.models import build_model  # noqa: E402
from cmgh import checkpoint as ckpt  # noqa: E402


def world(tmp: Path) -> config_mod.Config:
    cfg = config_mod.load()
    if (cfg.path("features") / "kinetics" / "index.parquet").is_file() and (cfg.path("features") / "vocab.json").is_file():
        print(f"features: {cfg.path('features')} (default config)")
        return config_mod.with_overrides(cfg, [f"paths.results={tmp / 'results'}"])
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_overrides  # type: ignore[import-not-found]

    from cmgh.data.extract import decoded
    from cmgh.data.synth.generate import synthesize

    cfg = config_mod.load(overrides=tiny_overrides(tmp))
    print(f"features: generating a tiny world in {tmp}")
    synthesize(cfg, datasets=["kinetics", "howto100m"], progress=False)
    decoded.build_vocab(cfg)
    decoded.extract(cfg, "kinetics")
    return cfg


def fake_checkpoint(cfg: config_mod.Config, out: Path) -> Path:
    """A checkpoint holding the random init (the task then runs exactly as for a trained one)."""
    from cmgh.data.extract.decoded import vocab_path
    from cmgh.data.extract.text import Vocabulary

    vocab = len(Vocabulary.load(vocab_path(cfg)))
    torch.manual_seed(0)
    model = build_model(cfg, "ms", vocab_size=vocab)
    ckpt.save(out, {"model": model.state_dict(), "meta": {"backbone": "ms", "variant": "baseline", "seed": 0, "vocab_size": vocab, "steps": 0}})
    config_mod.for_variant(cfg, "baseline").write(out)
    return out


def retrieval_ratio() -> None:
    path = REPO / "benchmarks" / "retrieval_metrics.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("bench_retrieval", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main()
        return
    sim = torch.randn(10_000, 10_000, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    retrieval_metrics(sim)
    t1 = time.perf_counter()
    torch.sort(sim, dim=1)
    t2 = time.perf_counter()
    print(f"retrieval_metrics / sort time ratio: {(t1 - t0) / (t2 - t1):.2f}x (target <= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-retrieval", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_retrieval:
        retrieval_ratio()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = world(tmp)
        run = fake_checkpoint(cfg, tmp / "run")
        payload = evaluate(cfg, "kinetics", run, tmp / "eval")
        timing = payload["timing"]
        print(f"kinetics linear probe: top1 {payload['top1']:.1f}, {payload['params']['n_train']} train clips")
        for name, seconds in sorted(timing.items()):
            print(f"  {name:>12}: {seconds:.3f} s")
        forward, metrics = timing.get("forward_s", float("nan")), timing.get("metrics_s", 0.0)
        print(f"probe fitting (L-BFGS, {len(cfg.evaluate.kinetics.weight_decays)}-point grid + refit) / forward time: {timing.get('probe_s', 0.0) / forward * 100:.1f}%")
        print(f"metrics / forward time: {metrics / forward * 100:.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()

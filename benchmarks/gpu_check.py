"""The one prepared check for a GPU machine: throughput, correctness, the loader and an end-to-end run, in <= 8 minutes.

Why: the GPU machines this project can use are lent for minutes, without network, with their own
Python 3.12 and torch 2.11 and nothing else. This script is all that needs to run there (after
``make gpu-wheels`` here and copying the working tree with ``gpu-wheels/bundle/``), from the
repository root:

    python3 benchmarks/gpu_check.py --out gpu-report

Sections (``benchmarks/gpu/``), each reported even when another fails:

  throughput   VATT-MA-Medium at config/paper.yaml shapes, bf16 autocast: the largest batch that
               fits, samples/s, TFLOP/s and MFU against a dense bf16 matmul measured in the same
               run, peak memory, for baseline, gr_gcl, all_parameters and gr_gcl_all, eager and
               torch.compile, and each one's cost per sample relative to the baseline
  correctness  all_parameters Gram and combined gradient in bf16 vs fp32; rule none = plain
               backward; NCE and MIL-NCE finite at batch 256
  loader       generated 256p packed shards through the real training loop with 8 and 14 loader
               workers: samples/s delivered vs the step's demand, GPU idle share
  e2e          cmgh pretrain --stop-after 20 and cmgh evaluate on the tiny generated world

Writes ``report.md`` and ``report.json`` to ``--out`` (after every section), prints the figures last,
and exits 1 if any section failed (a combination the library refuses in one line is reported as
refused and is not a failure), 2 if it cannot start. ``--smoke`` runs the same code on the CPU at
tiny shapes in about a minute (the test suite runs it).

Usage: python3 benchmarks/gpu_check.py --out DIR [--smoke] [--sections throughput,loader] [--no-compile]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.gpu import bundle, core, report  # noqa: E402  (stdlib only: they run before the dependencies are in place)

SECTIONS = ("throughput", "correctness", "loader", "e2e")
# name -> (title, seconds it needs on a GPU at least: with less left it is skipped, not started and killed)
TITLES = {
    "throughput": ("VATT-MA-Medium throughput, MFU and peak memory per variant, eager and compiled", 60.0),
    "correctness": ("all_parameters in bf16 vs fp32, rule none vs plain backward, losses at batch 256", 20.0),
    "loader": ("packed 256p shards through the training loop: delivered vs demanded samples/s, GPU idle", 60.0),
    "e2e": ("cmgh pretrain and cmgh evaluate on the tiny generated world", 40.0),
}
log = logging.getLogger("gpu_check")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and report.json")
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU at tiny shapes (CI)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--budget-s", type=float, default=None, help="time the whole check may take (default 470 on a GPU, 600 smoke)")
    parser.add_argument("--bundle", type=Path, default=None, help=f"folder of {bundle.ARCHIVE} (default gpu-wheels/bundle, or $CMGH_GPU_BUNDLE)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one, deleted)")
    g = parser.add_argument_group("throughput")
    g.add_argument("--variants", default="baseline,gr_gcl,all_parameters,gr_gcl_all", help="comma-separated check variants")
    g.add_argument("--no-compile", action="store_true", help="time eager steps only")
    g.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager, Dynamo alone, under --smoke)")
    g.add_argument("--max-batch", type=int, default=1024, help="largest batch the search tries")
    g.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2; 1 smoke)")
    g.add_argument("--steps", type=int, default=None, help="timed steps (default 6; 1 smoke)")
    g.add_argument("--reserve-s", type=float, default=None, help="seconds kept for the later sections before compiling a variant")
    g = parser.add_argument_group("loader")
    g.add_argument("--loader-workers", default="8,14", help="comma-separated loader worker counts")
    g.add_argument("--loader-batch", type=int, default=64)
    g.add_argument("--loader-steps", type=int, default=25)
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: {', '.join(unknown)} not among {', '.join(SECTIONS)}")
    args.variants = [v for v in args.variants.split(",") if v]
    args.loader_workers = [int(w) for w in args.loader_workers.split(",") if w]
    smoke = args.smoke
    args.budget_s = args.budget_s or (600.0 if smoke else 470.0)
    args.compile_backend = args.compile_backend or ("eager" if smoke else "inductor")
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 2)
    args.steps = args.steps or (1 if smoke else 6)
    args.reserve_s = args.reserve_s if args.reserve_s is not None else (0.0 if smoke else 170.0)
    return args


def sections(names: list[str], smoke: bool) -> list[core.Section]:
    """The sections' run functions, imported only now: they need torch and cmgh's dependencies."""
    from benchmarks.gpu import correctness, e2e, loader, throughput

    runs = {"throughput": throughput.run, "correctness": correctness.run, "loader": loader.run, "e2e": e2e.run}
    return [core.Section(n, TITLES[n][0], runs[n], 0.0 if smoke else TITLES[n][1]) for n in names]


def main(argv: list[str] | None = None, chosen: list[core.Section] | None = None) -> int:
    """Run the check; ``chosen`` replaces the sections of ``--sections`` (the tests inject a failing one)."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.monotonic()
    meta = {"status": "failed", "command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
            "started": started, "python": platform.python_version(), "smoke": args.smoke}
    try:
        site = bundle.ensure(args.bundle)
        import torch
    except (bundle.BundleError, ImportError) as exc:
        meta["error"] = str(exc)
        report.write(args.out, meta, [])
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    meta.update(torch=torch.__version__, device=torch.cuda.get_device_name(0) if device.type == "cuda" and torch.cuda.is_available() else "cpu",
                bundle=str(site) if site else "not needed (modules importable)")
    if device.type == "cuda" and not torch.cuda.is_available():
        meta["error"] = "no CUDA device visible to torch (run on a GPU machine, or --smoke on the CPU)"
        report.write(args.out, meta, [])
        print(f"gpu_check: {meta['error']}", file=sys.stderr)
        return 2
    try:
        chosen = chosen if chosen is not None else sections(args.sections, args.smoke)
    except ImportError as exc:  # a module the sections need (cmgh's or a dependency's) does not import here
        meta["error"] = f"{type(exc).__name__}: {exc}"
        report.write(args.out, meta, [])
        print(f"gpu_check: {meta['error']}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cmgh-gpu-check-") as tmp:
        work = args.work or Path(tmp)
        ctx = core.Context(device=device, smoke=args.smoke, out=args.out, work=work, deadline=t0 + args.budget_s, options=args)

        def write(records: list[dict]) -> None:
            meta.update(status=core.overall(records), wall_s=round(time.monotonic() - t0, 1))
            report.write(args.out, meta, records)

        records = core.run_sections(chosen, ctx, write)
    write(records)
    print(f"report: {args.out / report.MARKDOWN_NAME}, {args.out / report.JSON_NAME} ({meta['wall_s']:.0f} s, {meta['device']})")
    for r in records:
        for line in r["headline"]:
            print(f"  {line}")
        for problem in r["problems"]:
            print(f"  FAILED {r['name']}: {problem}")
    states = ", ".join(f"{r['name']} {r['status']}" for r in records)
    print(f"gpu check: {meta['status'].upper()} ({states})")
    return 0 if meta["status"] == core.OK else 1


if __name__ == "__main__":
    sys.exit(main())

"""VATT-MA-Medium at paper shapes: the largest batch that fits, samples/s, TFLOP/s, MFU and peak memory per variant, eager and compiled.

Every step is the trainer's own (:func:`cmgh.train.step.train_step` through ``benchmarks/model_demand.py``'s
``Bench``: the trainer's optimizer, schedule and harmonizer, bf16 autocast on CUDA), and the compiled
mode is the trainer's (:func:`cmgh.train.compile.compile_model`, what ``pretrain.compile: true``
does). Figures:

* batch: the largest that fits (doubling, then bisection to a multiple of 8, out-of-memory as the
  signal); the compiled step runs at the eager batch, halved if it does not fit;
* samples/s: the median of the timed steps (each between ``torch.cuda.synchronize`` calls);
* TFLOP/s: the FLOPs of this variant's step counted by ``FlopCounterMode`` (:func:`cmgh.models.flops.flop_counter`,
  counted at a small batch, per sample) over its time; MFU: the model's FLOPs (the analytic count of
  a plain step, :func:`cmgh.models.flops.train_flops`, the work every variant must do) over the time,
  as a share of a dense bf16 matmul's FLOP/s measured in the same run;
* x baseline: time per sample over the baseline's (rule ``none``) in the same mode.

A combination the library refuses in one line (a ``CmghError``) is ``refused`` and does not fail
the check; any other error (a Dynamo traceback, a wrong result) does.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import torch

from benchmarks import model_demand
from benchmarks.gpu import shapes
from benchmarks.gpu.core import Context, Outcome, Table
from cmgh.errors import CmghError
from cmgh.models import build_model
from cmgh.models.flops import train_flops
from cmgh.train.compile import compile_model
from cmgh.train.precision import use_bf16

COLUMNS = ["variant", "mode", "batch", "ms/step", "samples/s", "TFLOP/s", "MFU", "peak GiB", "x baseline", "compile s", "status"]


def _free(bench: Any | None = None) -> None:
    if bench is not None:
        bench.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory(exc: BaseException) -> bool:
    """The caching allocator's error, or a library's (cuBLAS, cuDNN) failing to allocate its workspace."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc) or "ALLOC_FAILED" in str(exc))


def fits(bench: model_demand.Bench, batch_size: int) -> bool:
    """Whether one step at ``batch_size`` runs (CUDA out-of-memory says no)."""
    try:
        bench.batch = shapes.device_batch(bench.cfg, batch_size, bench.device)
        bench.batch_size = batch_size
        bench.step()
        model_demand.sync(bench.device)
        return True
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not out_of_memory(exc):
            raise
    bench.batch = {}
    _free(bench)
    return False


def largest_batch(bench: model_demand.Bench, start: int, cap: int, grain: int) -> int:
    """Doubling from ``start`` to the first batch that does not fit (or ``cap``), then bisection to a multiple of ``grain``."""
    good, bad, b = 0, None, start
    while b >= 1 and not good:  # the start itself may not fit: halve
        if fits(bench, b):
            good = b
        else:
            bad, b = b, b // 2
    if not good:
        raise RuntimeError("not even a batch of 1 fits on the device")
    while bad is None and good < cap:
        b = min(cap, good * 2)
        if fits(bench, b):
            good = b
        else:
            bad = b
    while bad is not None and bad - good > grain:
        mid = (good + bad) // 2 // grain * grain
        if mid <= good:
            break
        if fits(bench, mid):
            good = mid
        else:
            bad = mid
    return good


def time_steps(bench: model_demand.Bench, warmup: int, steps: int) -> tuple[float, float, float]:
    """(median seconds per step, first warm-up step's seconds, peak GiB) of ``steps`` timed steps after ``warmup``."""
    cuda = bench.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(bench.device)
    t0 = time.perf_counter()
    bench.step()
    model_demand.sync(bench.device)
    first = time.perf_counter() - t0
    times = model_demand.step_seconds(bench, max(0, warmup - 1), steps)
    peak = torch.cuda.max_memory_allocated(bench.device) / 2**30 if cuda else float("nan")
    return statistics.median(times), first, peak


def run(ctx: Context) -> Outcome:
    opts, out, dev = ctx.options, Outcome(), ctx.device
    cfg0 = shapes.base(ctx.smoke)
    bf16 = use_bf16(dev, str(cfg0.pretrain.precision))
    peak = model_demand.matmul_peak(dev, bf16, 8192 if dev.type == "cuda" else 512)
    k, length = int(cfg0.features.text.candidates), int(cfg0.features.text.max_tokens)
    with torch.device("meta"):  # shapes only: the analytic count needs no weights
        meta_model = build_model(cfg0, shapes.BACKBONE)
    params = sum(p.numel() for p in meta_model.parameters())
    out.figures.update(matmul_tflops=peak / 1e12, precision="bf16 autocast" if bf16 else "fp32", parameters_m=params / 1e6,
                       shape=shapes.describe(cfg0), compile_backend=opts.compile_backend)
    torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)  # new models, new batch sizes: no silent eager fallback
    start, cap, grain = (2, 4, 2) if ctx.smoke else (32, opts.max_batch, 8)
    hint: dict[str, int] = {}  # meeting point -> the batch that fitted its first variant
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for name in opts.variants:
        cfg = shapes.resolved(ctx.smoke, name)
        point = str(cfg.pretrain.harmonize.meeting_point)
        bench = model_demand.Bench(cfg, "baseline", 2, dev)  # the resolved config: its variant is applied already
        try:
            b = largest_batch(bench, hint.get(point, start), cap if point not in hint else hint[point], grain)
            hint.setdefault(point, b)
            fb = min(b, 4 if ctx.smoke else 8)
            bench.batch, bench.batch_size = shapes.device_batch(cfg, fb, dev), fb
            counted = model_demand.step_flops(bench) / fb
            model_flops = train_flops(meta_model, b, k, length).total
            bench.batch, bench.batch_size = shapes.device_batch(cfg, b, dev), b
            sec, _, mem = time_steps(bench, opts.warmup, opts.steps)
            rows[name, "eager"] = _row(b, sec, counted, model_flops, peak, mem, 0.0, "ok")
            if opts.no_compile:
                rows[name, "compiled"] = _empty("skipped (--no-compile)")
            elif ctx.remaining() < opts.reserve_s:
                rows[name, "compiled"] = _empty(f"skipped: {ctx.remaining():.0f} s left, {opts.reserve_s:.0f} s kept for the later sections")
                out.notes.append(f"{name} compiled: not timed for lack of time (not a failure; rerun with --sections throughput)")
            else:
                rows[name, "compiled"] = _compiled(bench, cfg, b, counted, model_flops, peak, opts, out, name)
        except Exception as exc:  # noqa: BLE001 - one variant's error is reported, the other variants still run
            message = _message(exc)
            out.problems.append(f"{name} eager: {message}")
            rows.setdefault((name, "eager"), _empty(f"failed: {message}"))
        finally:
            del bench
            torch._dynamo.reset()  # compiled code may hold the model: free it before the next variant's
            _free()
    base = {m: rows.get(("baseline", m), {}).get("per_sample") for m in ("eager", "compiled")}
    table = []
    for (name, mode), r in rows.items():
        ratio = r["per_sample"] / base[mode] if r.get("per_sample") and base[mode] else float("nan")
        r["x_baseline"] = ratio
        out.figures[f"{name}/{mode}"] = r
        table.append([name, mode, r.get("batch", "-"), r.get("ms", float("nan")), r.get("samples_s", float("nan")), r.get("tflops", float("nan")),
                      r.get("mfu", float("nan")), r.get("peak_gib", float("nan")), ratio, r.get("compile_s", float("nan")), r["status"]])
    out.tables.append(Table(f"{'Tiny smoke model' if ctx.smoke else 'VATT-MA-Medium'} ({shapes.describe(cfg0)}), "
                            f"{'bf16 autocast' if bf16 else 'fp32'}; dense matmul {peak / 1e12:.1f} TFLOP/s", COLUMNS, table))
    out.notes.append("refused = the library declined the combination in one line (not a failure); failed = any other error (fails the check)")
    for (name, mode), r in rows.items():
        if r.get("samples_s"):
            peak_mem = f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] == r["peak_gib"] else ""  # NaN on the CPU
            out.headline.append(f"{name} {mode}: {r['samples_s']:.1f} samples/s at batch {r['batch']}, {r['tflops']:.3g} TFLOP/s, "
                                f"MFU {r['mfu']:.0%}{peak_mem}, {r['x_baseline']:.2f}x baseline per sample")
    return out


def _row(b: int, sec: float, counted: float, model_flops: float, peak: float, mem: float, compile_s: float, status: str) -> dict[str, Any]:
    return {"batch": b, "ms": sec * 1e3, "samples_s": b / sec, "per_sample": sec / b, "tflops": counted * b / sec / 1e12,
            "mfu": model_flops * b / sec / peak, "peak_gib": mem, "compile_s": compile_s, "status": status}


def _message(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def _empty(status: str) -> dict[str, Any]:
    return {"status": status}


def _compiled(bench: model_demand.Bench, cfg: Any, b: int, counted: float, model_flops: float, peak: float,
              opts: Any, out: Outcome, name: str) -> dict[str, Any]:
    """The same bench compiled in place as the trainer compiles it, at the eager batch (halved while it does not fit)."""
    try:
        plan = compile_model(bench.model, bench.harmonizer, opts.compile_backend, bench.device)
    except CmghError as exc:
        return _empty(f"refused: {exc}")
    if plan.eager:
        out.notes.append(f"{name} compiled: eager regions {', '.join(plan.eager)} ({plan.reason})")
    while True:
        bench.batch, bench.batch_size = shapes.device_batch(cfg, b, bench.device), b
        try:
            sec, first, mem = time_steps(bench, opts.warmup + 1, opts.steps)
            return _row(b, sec, counted, model_flops, peak, mem, first, "ok")
        except CmghError as exc:
            return _empty(f"refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - a compile crash of one combination is reported, the others still run
            if out_of_memory(exc) and b > 1:
                bench.batch = {}
                _free(bench)
                b //= 2
                continue
            message = _message(exc)
            out.problems.append(f"{name} compiled: {message}")
            return _empty(f"failed: {message}")

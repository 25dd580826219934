"""Correctness on the device: the ``all_parameters`` Gram and combined gradient in bf16 against fp32, rule ``none``
against a plain backward, and the two losses at a large batch.

Why on the device: the exactness tests run on the CPU in fp32; the GPU runs bf16 autocast, other
kernels (fused attention) and other summation orders. Every comparison is on the same model, the
same batch and the same random draws (DropToken is seeded alike; dropout is off so that nothing
else is random), through the trainer's own step (:func:`cmgh.train.step.train_step`, with a
learning rate of 0 so that the weights stay as they were and ``.grad`` holds what the update would use).

* rule ``none`` (representation and ``all_parameters``) vs ``loss.backward()`` of the same objective,
  fp32, TF32 off: relative error of all gradients <= :data:`EXACT`;
* ``all_parameters`` with rule ``cmgh``, bf16 autocast vs fp32: relative error of the per-sample Gram
  (``aa, ab, bb`` over every shared parameter), largest cosine difference, relative error of the combined
  gradient of the shared parameters; each must stay within :data:`BF16_FLOOR` or 3x what bf16 costs a plain
  backward on the same batch (measured here, the control), whichever is larger;
* NCE and MIL-NCE (and their gradients) finite at batch :data:`LARGE` in the training precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.gpu import shapes
from benchmarks.gpu.core import Context, Outcome, Table
from benchmarks.train_step import plain_backward
from cmgh import losses
from cmgh.config import Config
from cmgh.harmonize import Harmonizer
from cmgh.models import build_model
from cmgh.train.precision import autocast, use_bf16
from cmgh.train.step import train_step

EXACT = 1e-3  # fp32, different summation orders (per-sample Gram assembly, fused attention): far below any real defect
BF16_FLOOR = 0.1  # bf16 keeps 8 bits of mantissa; a missing or doubled term is an error of order 1
LARGE = 256
SEED = 7


class GramProbe(Harmonizer):
    """The config's harmonizer, keeping the per-sample Gram of the step's last :meth:`GhostGram.gram` call."""

    last_gram: Any = None

    def ghost_for(self, model: nn.Module) -> Any:
        ghost = super().ghost_for(model)
        if ghost is not None and hasattr(ghost, "gram"):
            measured = ghost.gram

            def gram() -> Any:
                self.last_gram = measured()
                return self.last_gram

            ghost.gram = gram
        return ghost


@contextmanager
def no_tf32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def flat(params: list[nn.Parameter]) -> Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten() for p in params])


def rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def harmonized(model: nn.Module, cfg: Config, batch: dict[str, Tensor], precision: str, overrides: list[str]) -> tuple[GramProbe, Any]:
    """One trainer step with ``cfg`` + ``overrides``'s harmonizer at learning rate 0 (``.grad`` filled, weights unchanged)."""
    from cmgh import config

    pretrain = config.with_overrides(cfg, overrides).to_dict()["pretrain"]
    harmonizer = GramProbe.from_config(pretrain)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    torch.manual_seed(SEED)
    result = train_step(model, batch, optimizer, None, harmonizer, step=0, temperature=float(cfg.pretrain.temperature), precision=precision)
    return harmonizer, result


def plain(model: nn.Module, cfg: Config, batch: dict[str, Tensor], precision: str) -> None:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    with autocast(next(model.parameters()).device, precision):
        plain_backward(model, batch, float(cfg.pretrain.temperature))


def run(ctx: Context) -> Outcome:
    out, dev = Outcome(), ctx.device
    cfg = shapes.base(ctx.smoke, ["model.dropout=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg, shapes.BACKBONE).to(dev).train()
    everything = [p for p in model.parameters() if p.requires_grad]
    shared = list(model.shared_parameters().values())
    b = 4 if ctx.smoke else 8
    batch = shapes.device_batch(cfg, b, dev, seed=1)
    rows: list[list[Any]] = []
    with no_tf32():
        plain(model, cfg, batch, "fp32")
        reference = flat(everything)
        for point in ("representation", "all_parameters"):
            harmonized(model, cfg, batch, "fp32", ["pretrain.harmonize.rule=none", f"pretrain.harmonize.meeting_point={point}"])
            err = rel(flat(everything), reference)
            ok = out.check(err <= EXACT, f"rule none at {point} differs from a plain backward by {err:.2e} (limit {EXACT:g})")
            rows.append([f"rule none at {point} vs plain backward (fp32, all {len(everything)} parameters)", err, EXACT, "ok" if ok else "FAILED"])
            out.figures[f"none_{point}_vs_plain"] = err

        plain(model, cfg, batch, "bf16")
        control = rel(flat(everything), reference)
        rows.append(["plain backward, bf16 vs fp32 (the control: what bf16 costs)", control, "-", "-"])
        limit = max(BF16_FLOOR, 3 * control)
        runs = {}
        for precision in ("fp32", "bf16"):
            probe, result = harmonized(model, cfg, batch, precision, ["pretrain.harmonize.rule=cmgh", *shapes.ALL_PARAMETERS])
            runs[precision] = (probe.last_gram, result.stats.cosine.double(), flat(shared))
    (g32, c32, s32), (g16, c16, s16) = runs["fp32"], runs["bf16"]
    if g32 is not None and g16 is not None:
        stack = lambda g: torch.stack([g.aa, g.ab, g.bb]).double()  # noqa: E731
        err = rel(stack(g16), stack(g32))
        ok = out.check(err <= limit, f"all_parameters Gram in bf16 is {err:.3f} off fp32 (limit {limit:.3f})")
        rows.append([f"all_parameters per-sample Gram (aa, ab, bb over {len(shared)} shared tensors), bf16 vs fp32", err, limit, "ok" if ok else "FAILED"])
        out.figures["gram_bf16_rel_error"] = err
    else:
        out.notes.append("the per-sample Gram was not captured (GhostGram.gram not called this step); its cosine is compared instead")
    cos_err = float((c16 - c32).abs().max())
    ok = out.check(cos_err <= limit, f"all_parameters conflict cosine in bf16 is up to {cos_err:.3f} off fp32 (limit {limit:.3f})")
    rows.append(["all_parameters conflict cosine (from the Gram), largest |bf16 - fp32|", cos_err, limit, "ok" if ok else "FAILED"])
    err = rel(s16, s32)
    ok = out.check(err <= limit, f"all_parameters combined gradient in bf16 is {err:.3f} off fp32 (limit {limit:.3f})")
    rows.append(["all_parameters combined gradient (rule cmgh) of the shared parameters, bf16 vs fp32", err, limit, "ok" if ok else "FAILED"])
    out.figures.update(plain_bf16_rel_error=control, cosine_bf16_max_abs_error=cos_err, combined_bf16_rel_error=err, batch=b)
    del model, runs

    out.figures.update(_large_batch(cfg, dev, out, rows))
    out.tables.append(Table(f"{'Tiny smoke model' if ctx.smoke else 'VATT-MA-Medium'} ({shapes.describe(cfg)}, dropout off), batch {b}",
                            ["check", "value", "limit", "status"], rows))
    out.headline.append(f"bf16 vs fp32 at all_parameters: combined gradient {err:.3f} relative error, cosine {cos_err:.3f} "
                        f"(a plain backward's bf16 error: {control:.3f}); rule none = plain backward to {out.figures['none_all_parameters_vs_plain']:.1e}")
    return out


def _large_batch(cfg: Config, dev: torch.device, out: Outcome, rows: list[list[Any]]) -> dict[str, float]:
    """NCE and MIL-NCE of the model's embeddings at batch :data:`LARGE`, in the training precision, and their gradients."""
    torch.manual_seed(0)
    model = build_model(cfg, shapes.BACKBONE).to(dev).train()
    batch = shapes.device_batch(cfg, LARGE, dev, seed=2)
    precision = str(cfg.pretrain.precision)
    shown = "bf16 autocast" if use_bf16(dev, precision) else "fp32"
    with torch.no_grad(), autocast(dev, precision):
        z = model(batch)
    del model
    z = {k: v.detach().requires_grad_() for k, v in z.items() if k.startswith("z_")}
    t = float(cfg.pretrain.temperature)
    with autocast(dev, precision):
        valid = losses.text_valid(batch["text_mask"], batch["has_text"])
        l_va = losses.nce(z["z_va_video"], z["z_va_audio"], t)
        l_vt = losses.mil_nce(z["z_vat_video"], z["z_vat_text"], batch["text_mask"], t, valid=valid)
        total = losses.objective(l_va, l_vt, valid, float(cfg.pretrain.vt_weight)).total
    total.backward()
    l_va, l_vt = l_va.detach(), l_vt.detach()
    finite = {"nce": bool(torch.isfinite(l_va).all()), "mil_nce": bool(torch.isfinite(l_vt).all()),
              "gradients": all(bool(torch.isfinite(v.grad).all()) for v in z.values())}
    for what, ok in finite.items():
        out.check(ok, f"{what} not finite at batch {LARGE}")
    rows.append([f"NCE, MIL-NCE and their gradients finite at batch {LARGE} ({shown})",
                 f"NCE {float(l_va.mean()):.3f}, MIL-NCE {float(l_vt.mean()):.3f} (ln B = {torch.log(torch.tensor(float(LARGE))):.3f})",
                 "finite", "ok" if all(finite.values()) else "FAILED"])
    return {"large_batch": LARGE, "nce_mean": float(l_va.mean()), "mil_nce_mean": float(l_vt.mean())}

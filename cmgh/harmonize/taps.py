"""Per-module rules of the per-sample Gram: what each kind of shared module contributes, and its share of the combined gradient.

A tap records one module's calls during the forward pass (:class:`cmgh.harmonize.ghost.GhostGram`
installs the hooks and runs the passes) and receives each objective's cotangent at the module's
output. From those it gives the module's part of every triplet's Gram (:meth:`gram`) and, once
a rule has turned the Gram into coefficients, adds ``sum_i alpha_i g^a_i + beta_i g^b_i`` to its
parameters' ``.grad`` (:meth:`assemble`).

* :class:`LinearTap` (``nn.Linear``): the ghost form ``sum_ts (x_t.x_s)(d^a_t.d^b_s)`` or the
  layer's per-sample gradients ``D^T X``, whichever costs fewer multiply-adds
  (:func:`linear_strategy`), a chunk of the batch at a time;
* vector taps, whose per-sample gradients are a few vectors reduced as the cotangent arrives:
  :class:`LayerNormTap`, :class:`PositionTap` (the video tokenizer's factorised position
  tables), :class:`AggTap` (the video ``[AGG]`` token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmgh.harmonize.rules import Gram
from cmgh.models.tokenizers import VideoTokenizer

CHUNK_BYTES = 8 * 2**20  # largest temporary of one layer's Gram computation (small against a step's activations)


def by_sample(t: Tensor, batch_size: int) -> Tensor:
    """A call's ``[R, ..., d]`` rows -> ``[B, tokens, d]`` (same dtype): a sample's rows are consecutive."""
    return t.reshape(batch_size, -1, t.shape[-1])


def accumulation(dtype: torch.dtype) -> torch.dtype:
    """Gram entries and gradients are summed in fp32 at least (bf16 cotangents under autocast)."""
    return torch.promote_types(dtype, torch.float32)


def upcast(t: Tensor) -> Tensor:
    """``t`` in :func:`accumulation` precision: cotangents are stored as autograd made them (bf16 under
    autocast, half an fp32 copy's memory) and widened only a chunk at a time."""
    return t.to(accumulation(t.dtype))


def gemm_dtype(x: Tensor, d: Tensor) -> torch.dtype:
    """The dtype of a layer's per-sample gradient GEMMs: the layer's own under autocast (bf16 inputs
    and cotangents: bf16 GEMMs accumulate in fp32 inside, like the plain backward's weight gradient,
    at 2-4x the fp32 rate on tensor cores or AMX), fp32 otherwise. Their products are summed in fp32."""
    return x.dtype if x.dtype == d.dtype and x.dtype in (torch.bfloat16, torch.float16) else accumulation(d.dtype)


def layer_input(x: Tensor) -> Tensor:
    """A linear layer's input as the layer computed with it: autocast's dtype inside an autocast region
    (what its weight gradient is made of, at half the memory of the fp32 activation), else as is."""
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return x.detach().to(torch.get_autocast_dtype(device))
    return x.detach()


def _accumulate(p: nn.Parameter, g: Tensor) -> None:
    g = g.reshape(p.shape).to(p.dtype)
    p.grad = g if p.grad is None else p.grad + g


def zeros_gram(batch_size: int, like: Tensor) -> Gram:
    z = torch.zeros(batch_size, device=like.device, dtype=accumulation(like.dtype))
    return Gram(z, z.clone(), z.clone())


@dataclass
class Call:
    """One forward call of a tapped module: its input and, once the passes ran, its output's cotangents."""

    x: Tensor | None  # input, detached (None once no longer needed)
    d: dict[str, Tensor] = field(default_factory=dict)  # objective -> cotangent [B, tokens, d_out]
    terminal: bool = False  # the input is data (a tokenizer's patches): DropToken may leave rows unused
    keep: Tensor | None = None  # [B, k] the tokens kept by compaction: later cotangents are cut to them too


class LinearTap:
    """``nn.Linear``: weight by the ghost or the materialised form (cheaper one), bias directly."""

    def __init__(self, module: nn.Linear) -> None:
        self.module, self.calls = module, []
        self.params = [p for p in (module.weight, module.bias) if p is not None]
        self.strategy = ""  # the last gram()'s choice

    def new_call(self, x: Tensor) -> Call:
        return Call(layer_input(x))

    def receive(self, call: Call, objective: str, g: Tensor, batch_size: int, final: bool) -> None:
        d = by_sample(g, batch_size)
        call.d[objective] = d if call.keep is None else _gather_tokens(d, call.keep)

    def forget(self, objective: str) -> None:
        for call in self.calls:
            call.d.pop(objective, None)

    def _stacked(self, objective: str, batch_size: int) -> tuple[list[Call], Tensor | None, Tensor | None]:
        calls = [c for c in self.calls if objective in c.d and c.x is not None]
        if not calls:
            return calls, None, None
        if len(calls) == 1:  # one call (every ms layer): views, no copy of the layer's activations
            return calls, by_sample(calls[0].x, batch_size), calls[0].d[objective]  # type: ignore[arg-type]
        x = torch.cat([by_sample(c.x, batch_size) for c in calls], dim=1)  # type: ignore[arg-type]
        return calls, x, torch.cat([c.d[objective] for c in calls], dim=1)

    def _compact(self, batch_size: int) -> None:
        """Keep only the tokens some objective's cotangent reaches, on data-fed calls.

        DropToken acts after the tokenizer, so half the patches (at the paper's rate 0.5) have a zero
        cotangent for every objective: they add nothing to any Gram entry or gradient. Done when
        every sample keeps the same number of tokens (DropToken's ``ceil((1 - rate) N)``).
        """
        for call in self.calls:
            if not call.terminal or not call.d or call.x is None:
                continue
            used = torch.stack([(d != 0).any(-1) for d in call.d.values()]).any(0)  # [B, N]
            counts = used.sum(1)
            k = int(counts.max())
            if k == used.shape[1] or int(counts.min()) != k:
                call.terminal = False  # nothing to gain (or ragged): do not look again
                continue
            call.keep = torch.sort(used.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
            call.x = _gather_tokens(by_sample(call.x, batch_size), call.keep)
            call.d = {o: _gather_tokens(d, call.keep) for o, d in call.d.items()}
            call.terminal = False

    def gram(self, batch_size: int) -> Gram:
        self._compact(batch_size)
        calls_a, xa, da = self._stacked("va", batch_size)
        calls_b, xb, db = self._stacked("vt", batch_size)
        if xa is None and xb is None:
            return zeros_gram(batch_size, self.module.weight)
        # An objective without any cotangent has a zero gradient here: give it a zero token.
        if xa is None or da is None:
            xa, da, calls_a = torch.zeros_like(xb[:, :1]), torch.zeros_like(db[:, :1]), []  # type: ignore[index]
        if xb is None or db is None:
            xb, db, calls_b = torch.zeros_like(xa[:, :1]), torch.zeros_like(da[:, :1]), []
        same_x = [id(c) for c in calls_a] == [id(c) for c in calls_b]
        d_in, d_out = xa.shape[-1], da.shape[-1]
        na, nb = xa.shape[1], xb.shape[1]
        self.strategy = linear_strategy(na, nb, d_in, d_out, same_x)
        ghost = self.strategy == "ghost"
        per_sample_floats = 2 * (na + nb) ** 2 if ghost else 2 * d_in * d_out + (na + nb) * d_out  # (the dense form copies D once)
        chunk = max(1, CHUNK_BYTES // (4 * per_sample_floats))
        work, acc = gemm_dtype(xa, da), accumulation(da.dtype)
        parts = []
        for lo in range(0, batch_size, chunk):
            s = slice(lo, lo + chunk)
            cxa, cda, cxb, cdb = xa[s].to(work), da[s].to(work), xb[s].to(work), db[s].to(work)
            if ghost:
                parts.append(_ghost_gram(cxa, cda, None if same_x else cxb, cdb))
            else:  # each objective's per-sample gradients, transposed ([c, d_in, d_out]: X^T D, the
                # orientation BLAS takes without a copy; a Frobenius product does not see the transpose)
                ga = _bmm(cxa.mT, cda)
                gb = _bmm((cxa if same_x else cxb).mT, cdb)
                parts.append(Gram(_frobenius(ga, ga, acc), _frobenius(ga, gb, acc), _frobenius(gb, gb, acc)))
        gram = Gram(*(torch.cat([getattr(p, k) for p in parts]) for k in ("aa", "ab", "bb")))
        if self.module.bias is not None:
            acc = accumulation(da.dtype)
            gram = gram + Gram.of(da.sum(1, dtype=acc), db.sum(1, dtype=acc))
        return gram

    def assemble(self, coefficients: Mapping[str, Tensor], batch_size: int) -> None:
        weight = self.module.weight
        gw = torch.zeros(weight.shape, device=weight.device, dtype=accumulation(weight.dtype))
        gb = torch.zeros(weight.shape[0], device=weight.device, dtype=gw.dtype)
        for call in self.calls:
            if not call.d or call.x is None:
                continue
            x = by_sample(call.x, batch_size)
            work = gemm_dtype(x, next(iter(call.d.values())))
            # the combined cotangent in the GEMM's dtype (bf16 under autocast: no fp32 copy of a layer's cotangents)
            dc = sum(coefficients[o].to(work)[:, None, None] * d.to(work) for o, d in call.d.items())
            assert isinstance(dc, Tensor)
            gw += dc.reshape(-1, dc.shape[-1]).T @ x.reshape(-1, x.shape[-1]).to(work)  # the plain backward's GEMM, in its dtype
            gb += dc.sum((0, 1), dtype=gb.dtype)
        _accumulate(weight, gw)
        if self.module.bias is not None:
            _accumulate(self.module.bias, gb)


def _gather_tokens(t: Tensor, keep: Tensor) -> Tensor:
    """``t [B, N, d]`` at the tokens ``keep [B, k]`` of each sample."""
    return t.gather(1, keep[..., None].expand(-1, -1, t.shape[-1]))


def linear_strategy(na: int, nb: int, d_in: int, d_out: int, same_x: bool) -> str:
    """``ghost`` or ``dense``: the cheaper way (multiply-adds per sample) to a linear layer's Gram entries.

    Ghost: token Gram matrices ``X X^T`` (once when both objectives see the same tokens) and the
    three ``D D^T``. Dense: both objectives' per-sample weight gradients ``D^T X``.
    """
    x_pairs = na * na if same_x else na * na + nb * nb + na * nb
    ghost = (na * na + nb * nb + na * nb) * d_out + x_pairs * d_in
    dense = (na + nb) * d_in * d_out
    return "ghost" if ghost < dense else "dense"


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for ``[c, m, k] @ [c, k, n]`` with transposed views: a chunk of one sample (a large
    layer's) goes through ``mm``, which hands the transposes to BLAS, where CPU ``bmm`` in bf16 first
    copies a transposed operand (measured: 3x the GEMM's own time at 785 tokens x 4096)."""
    return (a[0] @ b[0]).unsqueeze(0) if a.shape[0] == 1 else a @ b


def _frobenius(u: Tensor, v: Tensor, acc: torch.dtype) -> Tensor:
    """``<u_i, v_i>`` per sample of ``[c, m, n]`` matrices: row dot products (fp32 accumulation inside,
    each row's result rounded once in a low-precision dtype), summed in ``acc``; no product temporary."""
    return torch.linalg.vecdot(u, v).sum(-1, dtype=acc)


def _ghost_gram(xa: Tensor, da: Tensor, xb: Tensor | None, db: Tensor) -> Gram:
    """The ghost form of the three Gram entries; ``xb=None``: both objectives' tokens are ``xa``'s.
    The token Gram matrices come from GEMMs in the inputs' dtype, their products are summed in fp32."""
    acc = accumulation(da.dtype)
    xx_a = _bmm(xa, xa.mT)
    aa = _frobenius(xx_a, _bmm(da, da.mT), acc)
    xx_b, xx_ab = (xx_a, xx_a) if xb is None else (_bmm(xb, xb.mT), _bmm(xa, xb.mT))
    bb = _frobenius(xx_b, _bmm(db, db.mT), acc)
    ab = _frobenius(xx_ab, _bmm(da, db.mT), acc)
    return Gram(aa, ab, bb)


class VectorTap:
    """Parameters whose per-sample gradients are a few vectors: reduced from each cotangent as it arrives."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params, self.calls = params, []
        self.v: dict[str, list[Tensor]] = {}  # objective -> per parameter, per-sample gradients [B, numel]

    def per_sample(self, call: Call, d: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def new_call(self, x: Tensor) -> Call:
        return Call(x.detach())

    def receive(self, call: Call, objective: str, g: Tensor, batch_size: int, final: bool) -> None:
        parts = [p.reshape(batch_size, -1) for p in self.per_sample(call, upcast(by_sample(g, batch_size)))]
        have = self.v.get(objective)
        self.v[objective] = parts if have is None else [h + p for h, p in zip(have, parts, strict=True)]
        if final:
            call.x = None  # the last pass has used it: let the step's memory go

    def forget(self, objective: str) -> None:
        self.v.pop(objective, None)

    def gram(self, batch_size: int) -> Gram:
        zeros = [torch.zeros(batch_size, p.numel(), device=p.device, dtype=accumulation(p.dtype)) for p in self.params]
        va, vt = self.v.get("va", zeros), self.v.get("vt", zeros)
        return Gram.of(torch.cat(va, 1), torch.cat(vt, 1))

    def assemble(self, coefficients: Mapping[str, Tensor], batch_size: int) -> None:
        for k, p in enumerate(self.params):
            total = sum((coefficients[o][:, None] * v[k]).sum(0) for o, v in self.v.items())
            if isinstance(total, Tensor):
                _accumulate(p, total)


class LayerNormTap(VectorTap):
    """``nn.LayerNorm``: ``dgamma_i = sum_t d_t * xhat_t``, ``dbeta_i = sum_t d_t``."""

    def __init__(self, module: nn.LayerNorm) -> None:
        super().__init__([module.weight, module.bias])
        self.module = module

    def per_sample(self, call: Call, d: Tensor) -> list[Tensor]:
        m = self.module
        assert call.x is not None
        x = call.x.to(accumulation(call.x.dtype))
        xhat = by_sample(F.layer_norm(x, m.normalized_shape, eps=m.eps), d.shape[0])
        return [(d * xhat).sum(1), d.sum(1)]


class PositionTap(VectorTap):
    """:class:`VideoTokenizer`'s factorised position tables, from the cotangent of its output."""

    def __init__(self, module: VideoTokenizer) -> None:
        super().__init__([module.pos_t, module.pos_h, module.pos_w])
        self.module = module

    def new_call(self, x: Tensor) -> Call:
        return Call(None)  # needs only the cotangent

    def per_sample(self, call: Call, d: Tensor) -> list[Tensor]:
        gt, gh, gw = self.module.grid
        grid = d.reshape(d.shape[0], gt, gh, gw, d.shape[-1])
        return [grid.sum((2, 3)), grid.sum((1, 3)), grid.sum((1, 2))]


class AggTap(VectorTap):
    """The video ``[AGG]`` token: the cotangent at position 0 of the video sequence's Transformer input."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__([param])

    def new_call(self, x: Tensor) -> Call:
        return Call(None)

    def per_sample(self, call: Call, d: Tensor) -> list[Tensor]:
        return [d[:, 0]]

"""Exact per-sample Gram matrices of the two objectives' gradients over every shared parameter.

CMGH defines a triplet's conflict over the shared network's gradients. Materialising per-sample
gradients ``[B,P]`` costs ``B`` copies of the model; but the backbone treats each sample
independently (the batch couples only in the losses), so a linear layer's per-sample gradient
is ``D_i^T X_i`` (sample ``i``'s output cotangents and inputs over its tokens) and the inner
product of two of them is

    <D^a_i^T X_i, D^b_i^T X_i> = sum_{t,s} (x_t . x_s)(d^a_t . d^b_s)           (the "ghost" form)

computable from ``[N,N]`` token Gram matrices (the ghost-norm trick of differentially private
training) at ``~N^2 (d_in + d_out)`` per sample, against ``~N d_in d_out`` for materialising
that one layer's per-sample gradients. Each layer takes the cheaper of the two for its token
count and widths (the mixed strategy), a chunk of the batch at a time so that no temporary
outgrows :data:`CHUNK_BYTES`. Norms, biases, position tables and the ``[AGG]`` token have
per-sample gradients of a few vectors each, computed directly.

A step (:func:`cmgh.harmonize.harmonizer.harmonized_backward`): module hooks record each shared
module's inputs and outputs during the forward pass (:meth:`GhostGram.recording`); two cotangent
passes (``torch.autograd.grad`` to the recorded outputs, so no weight gradient is computed) give
every layer's output cotangents for each objective (:meth:`GhostGram.cotangents`);
:meth:`GhostGram.gram` sums the layers' Gram entries; once a rule has turned them into
coefficients, :meth:`GhostGram.assemble` writes ``sum_i alpha_i g^a_i + beta_i g^b_i`` into
``.grad`` from the stored inputs and cotangents: one weight-gradient GEMM per layer, what a plain
backward spends on weights.

In ``ma`` the shared Transformer also runs the audio and text sequences; those calls are
recorded too (a text call's rows are a sample's ``K`` captions, consecutive), so ``g^a_i``
collects the video and audio contributions and ``g^b_i`` the video and text ones. The
modality-specific parameters below the shared Transformer (audio and text tokenizers, their
``[AGG]`` tokens) are no one else's: they receive their own objective's plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmgh.harmonize.rules import Gram
from cmgh.models.backbones import Backbone, Transformer
from cmgh.models.tokenizers import VideoTokenizer

OBJECTIVES = ("va", "vt")  # the video-audio and the video-text objective
CHUNK_BYTES = 32 * 2**20  # largest temporary of one layer's Gram computation
MODALITY_OBJECTIVE = {"audio": "va", "text": "vt"}  # the one objective that reads a non-video sequence


def _by_sample(t: Tensor, batch_size: int) -> Tensor:
    """A call's ``[R, ..., d]`` rows -> ``[B, tokens, d]``, at least fp32: a sample's rows are consecutive."""
    return t.reshape(batch_size, -1, t.shape[-1]).to(_accumulation(t.dtype))


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    """Gram entries and gradients are summed in fp32 at least (bf16 cotangents under autocast)."""
    return torch.promote_types(dtype, torch.float32)


def _accumulate(p: nn.Parameter, g: Tensor) -> None:
    g = g.reshape(p.shape).to(p.dtype)
    p.grad = g if p.grad is None else p.grad + g


def _zeros_gram(batch_size: int, like: Tensor) -> Gram:
    z = torch.zeros(batch_size, device=like.device, dtype=_accumulation(like.dtype))
    return Gram(z, z.clone(), z.clone())


@dataclass
class _Call:
    """One forward call of a tapped module: its input and, once the passes ran, its output's cotangents."""

    x: Tensor | None  # input, detached (None once no longer needed)
    d: dict[str, Tensor] = field(default_factory=dict)  # objective -> cotangent [B, tokens, d_out]
    terminal: bool = False  # the input is data (a tokenizer's patches): DropToken may leave rows unused


class _LinearTap:
    """``nn.Linear``: weight by the ghost or the materialised form (cheaper one), bias directly."""

    def __init__(self, module: nn.Linear) -> None:
        self.module, self.calls = module, []
        self.params = [p for p in (module.weight, module.bias) if p is not None]
        self.strategy = ""  # the last gram()'s choice

    def new_call(self, x: Tensor) -> _Call:
        return _Call(x.detach())

    def receive(self, call: _Call, objective: str, g: Tensor, batch_size: int, final: bool) -> None:
        call.d[objective] = _by_sample(g, batch_size)

    def forget(self, objective: str) -> None:
        for call in self.calls:
            call.d.pop(objective, None)

    def _stacked(self, objective: str, batch_size: int) -> tuple[list[_Call], Tensor | None, Tensor | None]:
        calls = [c for c in self.calls if objective in c.d and c.x is not None]
        if not calls:
            return calls, None, None
        x = torch.cat([_by_sample(c.x, batch_size) for c in calls], dim=1)  # type: ignore[arg-type]
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
            idx = torch.sort(used.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
            x = _by_sample(call.x, batch_size)
            call.x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
            call.d = {o: d.gather(1, idx[..., None].expand(-1, -1, d.shape[-1])) for o, d in call.d.items()}
            call.terminal = False

    def gram(self, batch_size: int) -> Gram:
        self._compact(batch_size)
        calls_a, xa, da = self._stacked("va", batch_size)
        calls_b, xb, db = self._stacked("vt", batch_size)
        if xa is None and xb is None:
            return _zeros_gram(batch_size, self.module.weight)
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
        per_sample_floats = 2 * (na + nb) ** 2 if ghost else 2 * d_in * d_out
        chunk = max(1, CHUNK_BYTES // (4 * per_sample_floats))
        parts = []
        for lo in range(0, batch_size, chunk):
            s = slice(lo, lo + chunk)
            if ghost:
                parts.append(_ghost_gram(xa[s], da[s], None if same_x else xb[s], db[s]))
            elif same_x:  # both objectives' per-sample gradients from one GEMM, their Gram from one more
                g = torch.cat([da[s], db[s]], dim=-1).mT @ xa[s]  # [c, 2 d_out, d_in]
                g = g.reshape(g.shape[0], 2, -1)
                gg = g @ g.mT  # [c, 2, 2]
                parts.append(Gram(gg[:, 0, 0], gg[:, 0, 1], gg[:, 1, 1]))
            else:
                ga, gb = da[s].mT @ xa[s], db[s].mT @ xb[s]
                parts.append(Gram((ga * ga).sum((1, 2)), (ga * gb).sum((1, 2)), (gb * gb).sum((1, 2))))
        gram = Gram(*(torch.cat([getattr(p, k) for p in parts]) for k in ("aa", "ab", "bb")))
        if self.module.bias is not None:
            gram = gram + Gram.of(da.sum(1), db.sum(1))
        return gram

    def assemble(self, coefficients: Mapping[str, Tensor], batch_size: int) -> None:
        weight = self.module.weight
        gw = torch.zeros(weight.shape, device=weight.device, dtype=_accumulation(weight.dtype))
        gb = torch.zeros(weight.shape[0], device=weight.device, dtype=gw.dtype)
        for call in self.calls:
            if not call.d or call.x is None:
                continue
            dc = sum(coefficients[o][:, None, None] * d for o, d in call.d.items())
            assert isinstance(dc, Tensor)
            x = _by_sample(call.x, batch_size)
            gw += dc.reshape(-1, dc.shape[-1]).T @ x.reshape(-1, x.shape[-1])
            gb += dc.sum((0, 1))
        _accumulate(weight, gw)
        if self.module.bias is not None:
            _accumulate(self.module.bias, gb)


def linear_strategy(na: int, nb: int, d_in: int, d_out: int, same_x: bool) -> str:
    """``ghost`` or ``dense``: the cheaper way (multiply-adds per sample) to a linear layer's Gram entries.

    Ghost: token Gram matrices ``X X^T`` (once when both objectives see the same tokens) and the
    three ``D D^T``. Dense: both objectives' per-sample weight gradients ``D^T X``.
    """
    x_pairs = na * na if same_x else na * na + nb * nb + na * nb
    ghost = (na * na + nb * nb + na * nb) * d_out + x_pairs * d_in
    dense = (na + nb) * d_in * d_out
    return "ghost" if ghost < dense else "dense"


def _ghost_gram(xa: Tensor, da: Tensor, xb: Tensor | None, db: Tensor) -> Gram:
    """The ghost form of the three Gram entries; ``xb=None``: both objectives' tokens are ``xa``'s."""
    xx_a = xa @ xa.mT
    aa = (xx_a * (da @ da.mT)).sum((1, 2))
    xx_b, xx_ab = (xx_a, xx_a) if xb is None else (xb @ xb.mT, xa @ xb.mT)
    bb = (xx_b * (db @ db.mT)).sum((1, 2))
    ab = (xx_ab * (da @ db.mT)).sum((1, 2))
    return Gram(aa, ab, bb)


class _VectorTap:
    """Parameters whose per-sample gradients are a few vectors: reduced from each cotangent as it arrives."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params, self.calls = params, []
        self.v: dict[str, list[Tensor]] = {}  # objective -> per parameter, per-sample gradients [B, numel]

    def per_sample(self, call: _Call, d: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def new_call(self, x: Tensor) -> _Call:
        return _Call(x.detach())

    def receive(self, call: _Call, objective: str, g: Tensor, batch_size: int, final: bool) -> None:
        parts = [p.reshape(batch_size, -1) for p in self.per_sample(call, _by_sample(g, batch_size))]
        have = self.v.get(objective)
        self.v[objective] = parts if have is None else [h + p for h, p in zip(have, parts, strict=True)]
        if final:
            call.x = None  # the last pass has used it: let the step's memory go

    def forget(self, objective: str) -> None:
        self.v.pop(objective, None)

    def gram(self, batch_size: int) -> Gram:
        zeros = [torch.zeros(batch_size, p.numel(), device=p.device, dtype=_accumulation(p.dtype)) for p in self.params]
        va, vt = self.v.get("va", zeros), self.v.get("vt", zeros)
        return Gram.of(torch.cat(va, 1), torch.cat(vt, 1))

    def assemble(self, coefficients: Mapping[str, Tensor], batch_size: int) -> None:
        for k, p in enumerate(self.params):
            total = sum((coefficients[o][:, None] * v[k]).sum(0) for o, v in self.v.items())
            if isinstance(total, Tensor):
                _accumulate(p, total)


class _LayerNormTap(_VectorTap):
    """``nn.LayerNorm``: ``dgamma_i = sum_t d_t * xhat_t``, ``dbeta_i = sum_t d_t``."""

    def __init__(self, module: nn.LayerNorm) -> None:
        super().__init__([module.weight, module.bias])
        self.module = module

    def per_sample(self, call: _Call, d: Tensor) -> list[Tensor]:
        m = self.module
        assert call.x is not None
        x = call.x.to(_accumulation(call.x.dtype))
        xhat = _by_sample(F.layer_norm(x, m.normalized_shape, eps=m.eps), d.shape[0])
        return [(d * xhat).sum(1), d.sum(1)]


class _PositionTap(_VectorTap):
    """:class:`VideoTokenizer`'s factorised position tables, from the cotangent of its output."""

    def __init__(self, module: VideoTokenizer) -> None:
        super().__init__([module.pos_t, module.pos_h, module.pos_w])
        self.module = module

    def new_call(self, x: Tensor) -> _Call:
        return _Call(None)  # needs only the cotangent

    def per_sample(self, call: _Call, d: Tensor) -> list[Tensor]:
        gt, gh, gw = self.module.grid
        grid = d.reshape(d.shape[0], gt, gh, gw, d.shape[-1])
        return [grid.sum((2, 3)), grid.sum((1, 3)), grid.sum((1, 2))]


class _AggTap(_VectorTap):
    """The video ``[AGG]`` token: the cotangent at position 0 of the video sequence's Transformer input."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__([param])

    def new_call(self, x: Tensor) -> _Call:
        return _Call(None)

    def per_sample(self, call: _Call, d: Tensor) -> list[Tensor]:
        return [d[:, 0]]


class UncoveredParameterError(TypeError):
    """A shared parameter has no per-sample gradient rule (a new module type needs one here)."""


@dataclass
class _Boundary:
    """``ma``: a non-video sequence's input to the shared Transformer, and its objective's cotangent there."""

    x: Tensor  # attached: below it lie that modality's own tokenizer and [AGG] token
    d: Tensor | None = None


class GhostGram:
    """The recorded forward pass of one step, its two objectives' cotangents, their Gram and the combined gradient.

    Cotangents are caught by tensor hooks on the recorded outputs as a pass goes by (vector
    parameters reduce theirs on the spot), so no output is kept alive beyond what autograd
    itself keeps. One per step: the records reference the step's tensors until :meth:`release`.
    """

    def __init__(self, model: nn.Module) -> None:
        shared: dict[str, nn.Parameter] = model.shared_parameters()  # type: ignore[operator]
        backbone: Backbone = model.backbone  # type: ignore[assignment]
        self.transformer: Transformer = backbone.transformer("video")
        self.backbone = backbone
        self.agg = _AggTap(backbone.agg["video"])
        self.taps: list[_LinearTap | _VectorTap] = [self.agg]
        self._module_taps: list[tuple[nn.Module, _LinearTap | _VectorTap]] = []
        owned = {id(p) for p in shared.values()}
        covered = {id(backbone.agg["video"])}
        for module in model.modules():
            if not any(id(p) in owned for p in module.parameters(recurse=False)):
                continue
            tap: _LinearTap | _VectorTap
            if isinstance(module, nn.Linear):
                tap = _LinearTap(module)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine and module.bias is not None:
                tap = _LayerNormTap(module)
            elif isinstance(module, VideoTokenizer):
                tap = _PositionTap(module)
            else:
                continue
            self.taps.append(tap)
            self._module_taps.append((module, tap))
            covered |= {id(p) for p in tap.params}
        missing = [name for name, p in shared.items() if id(p) not in covered]
        if missing:
            raise UncoveredParameterError(f"no per-sample gradient rule for shared parameter(s) {', '.join(missing)}")
        self.shares_other_modalities = backbone.transformer("audio") is self.transformer
        self.boundary: dict[str, _Boundary] = {}
        self.terminals: list[Tensor] = []  # outputs of the first differentiable layers: where a pass may stop
        self.batch_size = 0
        self._modality = "video"
        self._objective = ""
        self._final = False

    @property
    def meeting_keys(self) -> tuple[str, ...]:
        """The representations the heads must read as detached leaves: every one the shared pathway produces."""
        return ("video_rep", "audio_rep", "text_rep") if self.shares_other_modalities else ("video_rep",)

    @contextmanager
    def recording(self, batch_size: int) -> Iterator[GhostGram]:
        """Hooks on the shared modules for the duration of one forward pass."""
        self.batch_size = batch_size
        handles = [module.register_forward_hook(self._recorder(tap)) for module, tap in self._module_taps]
        handles.append(self.backbone.register_forward_pre_hook(self._enter_modality))
        handles.append(self.transformer.register_forward_pre_hook(self._transformer_input, with_kwargs=True))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _recorder(self, tap: _LinearTap | _VectorTap) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            if out.requires_grad:
                call = tap.new_call(args[0])
                self._tap_tensor(tap, call, out)
                if isinstance(tap, _LinearTap) and not args[0].requires_grad:
                    call.terminal = True
                    self.terminals.append(out)

        return record

    def _tap_tensor(self, tap: _LinearTap | _VectorTap, call: _Call, out: Tensor) -> None:
        tap.calls.append(call)

        def arrived(g: Tensor) -> None:
            if self._objective:
                tap.receive(call, self._objective, g, self.batch_size, self._final)

        out.register_hook(arrived)

    def _enter_modality(self, module: nn.Module, args: tuple[object, ...]) -> None:
        self._modality = str(args[0])

    def _transformer_input(self, module: nn.Module, args: tuple[Tensor, ...], kwargs: dict[str, object]) -> None:
        start = args[2] if len(args) > 2 else kwargs.get("start", 0)
        if start != 0:  # a later block range of a split run: its input is a hidden state, not the sequence
            return
        x = args[0]
        if self._modality == "video":
            self._tap_tensor(self.agg, self.agg.new_call(x), x)
        else:
            self.boundary[self._modality] = _Boundary(x)

    def cotangents(
        self, objective: str, seeds: Mapping[str, Tensor | None], reps: Mapping[str, Tensor], *, retain_graph: bool, final: bool = False
    ) -> None:
        """One cotangent pass of ``objective``: ``seeds[k]`` at the attached representation ``reps[k]``.

        ``final``: no pass follows (inputs only the pass needed are dropped on the way).
        """
        for tap in self.taps:
            tap.forget(objective)
        pairs = [(reps[k], s) for k, s in seeds.items() if s is not None]
        if not pairs:
            return
        boundary = [m for m, o in MODALITY_OBJECTIVE.items() if o == objective and m in self.boundary]
        inputs = self.terminals + [self.boundary[m].x for m in boundary]
        self._objective, self._final = objective, final
        try:
            grads = torch.autograd.grad(
                [r for r, _ in pairs], inputs, [s.to(r.dtype) for r, s in pairs], retain_graph=retain_graph, allow_unused=True
            )
        finally:
            self._objective, self._final = "", False
        for m, g in zip(boundary, grads[len(self.terminals) :], strict=True):
            self.boundary[m].d = g

    def gram(self) -> Gram:
        """The per-sample Gram over every shared parameter (sum of the layers')."""
        total = _zeros_gram(self.batch_size, self.agg.params[0])
        for tap in self.taps:
            total = total + tap.gram(self.batch_size)
        return total

    def assemble(self, alpha: Tensor, beta: Tensor) -> None:
        """``.grad += sum_i alpha_i g^a_i + beta_i g^b_i`` over the shared parameters; plain gradients below them (``ma``)."""
        dtype = _accumulation(self.agg.params[0].dtype)
        coefficients = {"va": alpha.detach().to(dtype), "vt": beta.detach().to(dtype)}
        for tap in self.taps:
            tap.assemble(coefficients, self.batch_size)
        pending = [(b.x, b.d) for b in self.boundary.values() if b.d is not None]
        if pending:
            torch.autograd.backward([x for x, _ in pending], [d for _, d in pending])

    def release(self) -> None:
        """Drop every reference into the step's graph."""
        for tap in self.taps:
            tap.calls.clear()
            if isinstance(tap, _VectorTap):
                tap.v.clear()
        self.boundary.clear()
        self.terminals.clear()

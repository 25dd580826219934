"""Exact per-sample Gram matrices of the two objectives' gradients over every shared parameter.

Our reading of CMGH (a reconstruction from the abstract) puts a triplet's conflict over the shared network's gradients. Materialising per-sample
gradients ``[B,P]`` costs ``B`` copies of the model; but the backbone treats each sample
independently (the batch couples only in the losses), so a linear layer's per-sample gradient
is ``D_i^T X_i`` (sample ``i``'s output cotangents and inputs over its tokens) and the inner
product of two of them is

    <D^a_i^T X_i, D^b_i^T X_i> = sum_{t,s} (x_t . x_s)(d^a_t . d^b_s)           (the "ghost" form)

computable from ``[N,N]`` token Gram matrices (the ghost-norm trick of differentially private
training) at ``~N^2 (d_in + d_out)`` per sample, against ``~N d_in d_out`` for materialising
that one layer's per-sample gradients. Each layer takes the cheaper of the two for its token
count and widths (the mixed strategy). Norms, biases, position tables and the ``[AGG]`` token
have per-sample gradients of a few vectors each, computed directly. The per-module rules are
:mod:`cmgh.harmonize.taps`; this module records the forward pass and runs the passes.

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
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cmgh.harmonize.gradients import leaf_gradients
from cmgh.harmonize.rules import Gram
from cmgh.harmonize.taps import AggTap, Call, LayerNormTap, LinearTap, PositionTap, VectorTap, accumulation, zeros_gram
from cmgh.models.backbones import Backbone, Transformer
from cmgh.models.tokenizers import VideoTokenizer

OBJECTIVES = ("va", "vt")  # the video-audio and the video-text objective
MODALITY_OBJECTIVE = {"audio": "va", "text": "vt"}  # the one objective that reads a non-video sequence


class UncoveredParameterError(TypeError):
    """A shared parameter has no per-sample gradient rule (a new module type needs one here)."""


class CompiledSharedPathwayError(ValueError):
    """A compiled region holds a shared parameter: its layers' outputs are not in the eager autograd graph, so the
    cotangent passes cannot reach them (the Gram would be silently wrong)."""


def _is_compiled(module: nn.Module) -> bool:
    """``module.compile()`` (in place) or ``torch.compile(module)`` (a wrapper)."""
    return getattr(module, "_compiled_call_impl", None) is not None or type(module).__name__ == "OptimizedModule"


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
        self.agg = AggTap(backbone.agg["video"])
        self.taps: list[LinearTap | VectorTap] = [self.agg]
        self._module_taps: list[tuple[nn.Module, LinearTap | VectorTap]] = []
        owned = {id(p) for p in shared.values()}
        compiled = [name or "model" for name, m in model.named_modules() if _is_compiled(m) and any(id(p) in owned for p in m.parameters())]
        if compiled:
            raise CompiledSharedPathwayError(f"the all_parameters recorder needs the shared pathway eager, but {', '.join(compiled)} "
                                             "is compiled (compile with cmgh.train.compile.compile_model, which leaves it out)")
        covered = {id(backbone.agg["video"])}
        for module in model.modules():
            if not any(id(p) in owned for p in module.parameters(recurse=False)):
                continue
            tap: LinearTap | VectorTap
            if isinstance(module, nn.Linear):
                tap = LinearTap(module)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine and module.bias is not None:
                tap = LayerNormTap(module)
            elif isinstance(module, VideoTokenizer):
                tap = PositionTap(module)
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

    def _recorder(self, tap: LinearTap | VectorTap) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def record(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            if out.requires_grad:
                call = tap.new_call(args[0])
                self._tap_tensor(tap, call, out)
                if isinstance(tap, LinearTap) and not args[0].requires_grad:
                    call.terminal = True
                    self.terminals.append(out)

        return record

    def _tap_tensor(self, tap: LinearTap | VectorTap, call: Call, out: Tensor) -> None:
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

    def measure(
        self,
        l_va: Tensor,
        l_vt: Tensor,
        cut: Mapping[str, tuple[Tensor, Tensor]],
        c_va: Tensor,
        c_vt: Tensor,
        *,
        last: bool,
        exact: bool = False,
    ) -> tuple[Tensor, Tensor, Gram]:
        """The objective ``sum c_va l_va + sum c_vt l_vt``'s per-sample Gram over every shared parameter.

        Seeds both cotangent passes with each objective's gradients at the detached
        representations (``cut``: key -> ``(attached, leaf)``) and returns them at ``video_rep``
        (zeros for an objective that does not reach it) beside the Gram. ``last``: no further
        pass follows, so the second one frees the graph as it goes. ``exact``: the seeds are each
        triplet's own gradients (``pretrain.harmonize.per_sample: own``), so is everything they carry.
        """
        seeds = leaf_gradients(l_va, l_vt, {k: leaf for k, (_, leaf) in cut.items()}, c_va, c_vt, exact=exact)
        attached = {k: a for k, (a, _) in cut.items()}
        for objective in OBJECTIVES:
            final = last and objective == OBJECTIVES[-1]
            self.cotangents(objective, seeds[objective], attached, retain_graph=not final, final=final)
        g_va, g_vt = (seeds[o]["video_rep"] for o in OBJECTIVES)
        zero = torch.zeros_like(cut["video_rep"][1])
        return (zero if g_va is None else g_va), (zero if g_vt is None else g_vt), self.gram()

    def gram(self) -> Gram:
        """The per-sample Gram over every shared parameter (sum of the layers')."""
        total = zeros_gram(self.batch_size, self.agg.params[0])
        for tap in self.taps:
            total = total + tap.gram(self.batch_size)
        return total

    def assemble(self, alpha: Tensor, beta: Tensor) -> None:
        """``.grad += sum_i alpha_i g^a_i + beta_i g^b_i`` over the shared parameters; plain gradients below them (``ma``)."""
        dtype = accumulation(self.agg.params[0].dtype)
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
            if isinstance(tap, VectorTap):
                tap.v.clear()
        self.boundary.clear()
        self.terminals.clear()

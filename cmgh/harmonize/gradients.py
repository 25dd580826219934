"""Per-sample gradients at the meeting point and the single harmonized backward pass.

The two objectives of VATT meet at the shared video representation ``video_rep [B,D]``: the
video-audio head and the video-text head both read it. CMGH (Sec. 3.2) compares, per triplet,
the gradient of ``L_va`` and the gradient of ``L_vt`` and realigns them when they conflict.

**Meeting point "representation" (default, cheap).** The trainer cuts the graph at
``video_rep``: the heads read a detached leaf ``meet`` (:func:`detach_meeting_point`), so
``torch.autograd.grad(J, meet)`` runs through the small heads and the loss only, never the
backbone. What that gives, exactly:

* ``per_sample_gradients(..., exact=False)`` ("cheap") returns row ``i`` of
  ``d(sum_j c_j l_j) / d video_rep``, i.e. ``sum_j c_j dl_j/d rep_i``: the gradient the backbone
  would receive for sample ``i`` from that objective. Because NCE and MIL-NCE couple the batch
  through the softmax denominators, this includes the contributions of *other* samples' losses
  in which sample ``i`` is a negative. For a per-sample-separable loss it is exactly
  ``c_i dl_i/d rep_i``.
* ``exact=True`` returns ``c_i dl_i/d rep_i`` (sample ``i``'s own loss only, the other samples'
  embeddings held fixed), the diagonal of the ``[B,B,D]`` Jacobian, computed with one batched
  vector-Jacobian product (``is_grads_batched``) through the heads: ``B`` times the head cost,
  still no backbone pass. It is what "the gradient of triplet ``i``'s loss" means literally,
  but it is *not* what the backbone receives, so the combined gradient built from it no
  longer sums to the plain gradient under the rule ``none``; the cheap one does, which is why
  it is the default.

**One backward.** :func:`harmonized_backward` combines the per-sample gradients with the rule,
then calls ``torch.autograd.backward([J_total, video_rep], [1, combined])`` once: the first term
flows through the heads (their parameters get the plain gradients of the weighted objective),
through ``audio_rep``/``text_rep`` into the audio and text towers (their own objectives'
gradients, unchanged by the rule), and stops at the detached ``meet``; the second feeds the
combined gradient into the video pathway of the backbone. With rule ``none`` and no curriculum,
``combined = d J_total / d video_rep`` and every parameter gradient equals plain
``J_total.backward()``. Extra cost over a plain step: two to four small passes through the
heads and losses, no extra backbone pass.

**Meeting point "parameters".** CMGH defines the conflict over the shared parameters'
gradients. :func:`parameter_gradients` computes per-sample gradients of each objective over the
last ``parameter_blocks`` blocks of the video pathway (with :mod:`torch.func`: ``vmap(grad(...))``
over ``functional_call`` of the tail blocks on each sample's hidden state), as
``J_i^T g_i`` with ``J_i = d rep_i / d theta``: sample ``i``'s share of the parameter gradient
through its video representation (these sum over ``i`` to the tail blocks' gradient through
``video_rep``). In the ``ma`` backbone those blocks also serve audio and text; their
contributions through the audio and text pathways are not included (the video pathway is what
both objectives share in both backbones). The cosine computed there drives the curriculum and
the conflict statistics; the combination itself is still applied at the representation (the
rule decides on the representation gradients), which keeps a single backward pass. This costs
one extra forward+backward of the tail blocks per sample and objective (measured about 1.5x a
plain step at the default size, against about 1.02x for the representation). The tail is
re-run with explicit softmax attention (``vmap`` has no batching rule for the fused CPU kernel);
with ``model.dropout > 0`` its dropout masks are redrawn, so the cosine is then that of a
slightly different sub-network (exact in eval mode or with dropout 0, the default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from cmgh import losses
from cmgh.harmonize.curriculum import Curriculum, CurriculumWeights
from cmgh.errors import ConfigError
from cmgh.harmonize import rules


def detach_meeting_point(reps: Mapping[str, Tensor], key: str = "video_rep") -> tuple[dict[str, Tensor], Tensor]:
    """Cut the graph at the shared representation: ``(reps with a detached leaf at key, the attached tensor)``.

    Apply the heads to the returned dict; pass both the leaf (``reps[key]``) and the attached
    tensor to :func:`harmonized_backward`.
    """
    attached = reps[key]
    out = dict(reps)
    out[key] = attached.detach().requires_grad_(True)
    return out, attached


def objective_cotangents(
    valid_vt: Tensor,
    vt_weight: float,
    w_va: Tensor | None = None,
    w_vt: Tensor | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(c_va, c_vt) [B]`` with ``J_total = sum c_va l_va + sum c_vt l_vt`` (as :func:`cmgh.losses.objective`).

    ``c_va = w_va / sum w_va`` and ``c_vt = lambda w_vt valid / sum(w_vt valid)``.
    """
    b = batch_size or valid_vt.shape[0]
    one = torch.ones(b, device=valid_vt.device)
    wa = one if w_va is None else w_va.float()
    wt = (one if w_vt is None else w_vt.float()) * valid_vt.float()
    c_va = wa / wa.sum().clamp_min(1e-12) if bool(wa.sum() > 0) else torch.zeros_like(wa)
    c_vt = vt_weight * wt / wt.sum().clamp_min(1e-12) if bool(wt.sum() > 0) else torch.zeros_like(wt)
    return c_va, c_vt


def per_sample_gradients(
    l_va: Tensor,
    l_vt: Tensor,
    meet: Tensor,
    c_va: Tensor | None = None,
    c_vt: Tensor | None = None,
    *,
    exact: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-sample gradients ``g_va, g_vt [B,D]`` of ``sum_j c_j l_j`` at ``meet`` (graph retained).

    ``exact=False``: row ``i`` of ``d(sum_j c_j l_j)/d meet`` (includes other samples' losses
    through the negatives: the gradient the backbone receives for sample ``i``).
    ``exact=True``: ``c_i d l_i / d meet_i`` only (the Jacobian's diagonal). See the module
    docstring.
    """
    c_va = torch.ones_like(l_va) if c_va is None else c_va.to(l_va.dtype)
    c_vt = torch.ones_like(l_vt) if c_vt is None else c_vt.to(l_vt.dtype)
    out = []
    for loss, c in ((l_va, c_va), (l_vt, c_vt)):
        if not loss.requires_grad:
            out.append(torch.zeros_like(meet))
            continue
        if exact:
            eye = torch.diag(c)
            (jac,) = torch.autograd.grad(
                loss, meet, grad_outputs=eye, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
            g = torch.zeros_like(meet) if jac is None else jac.diagonal(dim1=0, dim2=1).T
        else:
            (g,) = torch.autograd.grad(loss, meet, grad_outputs=c, retain_graph=True, allow_unused=True)
            g = torch.zeros_like(meet) if g is None else g
        out.append(g)
    return out[0], out[1]


def parameter_gradients(
    tail: nn.Module, hidden: Tensor, cotangents: Sequence[Tensor], key_mask: Tensor | None = None
) -> list[Tensor]:
    """Per-sample parameter gradients ``[B,P]`` of the tail blocks, one per representation cotangent.

    For cotangent ``g [B,D]`` (a per-sample gradient at ``video_rep``), row ``i`` is
    ``J_i^T g_i``, ``J_i = d tail(hidden_i) / d theta``: computed with ``torch.func.vmap`` of
    ``torch.func.grad`` over ``functional_call(tail, theta, hidden_i)``. Summed over ``i`` it
    equals the gradient ``theta`` receives from ``video_rep`` with cotangent ``g``.
    """
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in tail.named_parameters()}
    h = hidden.detach()

    def contracted(theta: dict[str, Tensor], h_i: Tensor, g_i: Tensor, m_i: Tensor | None) -> Tensor:
        mask = None if m_i is None else m_i[None]
        rep = functional_call(tail, theta, (h_i[None], mask))[0]
        return (rep * g_i.detach()).sum()

    n = len(cotangents)
    hs = h.repeat(n, *([1] * (h.dim() - 1)))
    gs = torch.cat([g.detach() for g in cotangents])
    ms = None if key_mask is None else key_mask.repeat(n, 1)
    in_dims = (None, 0, 0, None if ms is None else 0)
    fused = [(m, m.fused) for m in tail.modules() if hasattr(m, "fused")]
    try:
        for m, _ in fused:
            m.fused = False  # explicit attention: vmap has no batching rule for the fused CPU kernel
        grads = vmap(grad(contracted), in_dims=in_dims, randomness="different")(params, hs, gs, ms)
    finally:
        for m, flag in fused:
            m.fused = flag
    flat = torch.cat([grads[name].reshape(hs.shape[0], -1) for name in params], dim=1)
    return list(flat.chunk(n, dim=0))


@dataclass
class StepStats:
    """What a harmonized step computed (all detached): for logging, score dumps and the noise evaluation."""

    objective: losses.Objective
    cosine: Tensor  # [B] conflict cosine at the meeting point (0 for rows without text)
    cosine_representation: Tensor  # [B] cosine at the representation (equal to cosine there)
    weights: CurriculumWeights | None
    conflict_fraction: float  # share of rows with text whose cosine is negative
    extras: dict[str, Any] = field(default_factory=dict)


def harmonized_backward(
    video_rep: Tensor,
    meet: Tensor,
    l_va: Tensor,
    l_vt: Tensor,
    valid_vt: Tensor,
    *,
    vt_weight: float = 1.0,
    rule: str = "none",
    rule_params: Mapping[str, Any] | None = None,
    curriculum: Curriculum | None = None,
    step: int = 0,
    exact: bool = False,
    tail: nn.Module | None = None,
    hidden: Tensor | None = None,
) -> StepStats:
    """Combine the two objectives per sample at ``video_rep`` and run ONE backward pass.

    1. Per-sample gradients at ``meet`` of ``J_va`` and ``lambda J_vt`` (through the heads only).
    2. Conflict cosine: at the representation, or at the tail parameters if ``tail`` and
       ``hidden`` are given (the ``parameters`` meeting point).
    3. Curriculum (CMGH Sec. 3.3) weights from the cosine or the losses; with non-trivial
       weights the per-sample gradients are recomputed for the weighted objective.
    4. The rule (CMGH Sec. 3.2 or a baseline) combines ``g_va, g_vt`` per row.
    5. ``autograd.backward([J_total, video_rep], [1, combined])``: heads and audio/text towers
       get the gradients of the (weighted) objective, the video backbone gets ``combined``.

    Rows without text have ``g_vt = 0`` and thus receive ``g_va`` only under every rule.
    ``video_rep`` is the backbone output, ``meet`` the detached leaf the heads read
    (:func:`detach_meeting_point`).
    """
    if meet is video_rep or not meet.requires_grad or meet.grad_fn is not None:
        raise ValueError("meet must be the detached leaf the heads read (see detach_meeting_point)")
    params = dict(rule_params or {})
    combine = rules.get(rule)
    valid_vt = valid_vt.bool()

    weights: CurriculumWeights | None = None
    if curriculum is not None and curriculum.active and not curriculum.needs_cosine:
        weights = curriculum(step, valid_vt, l_va=l_va, l_vt=l_vt)

    def grads_for(w: CurriculumWeights | None) -> tuple[Tensor, Tensor]:
        c_va, c_vt = objective_cotangents(
            valid_vt, vt_weight, None if w is None else w.w_va, None if w is None else w.w_vt, l_va.shape[0]
        )
        return per_sample_gradients(l_va, l_vt, meet, c_va, c_vt, exact=exact)

    g_va, g_vt = grads_for(weights)
    cos_rep = rules.conflict_cosine(g_va, g_vt)
    cosine = cos_rep
    extras: dict[str, Any] = {}
    if tail is not None and hidden is not None:
        p_va, p_vt = parameter_gradients(tail, hidden, [g_va, g_vt])
        cosine = rules.conflict_cosine(p_va, p_vt)
        extras["parameter_grad_norms"] = (p_va.norm(dim=1).detach(), p_vt.norm(dim=1).detach())
    cosine = torch.where(valid_vt, cosine, torch.zeros_like(cosine))

    if curriculum is not None and curriculum.needs_cosine:
        weights = curriculum(step, valid_vt, cosine=cosine, l_va=l_va, l_vt=l_vt)
        # Decided by the schedule alone (not by this batch's weights) so that data-parallel ranks,
        # whose gradients cross a collective, always take the same branch.
        if weights.keep < 1.0:
            g_va, g_vt = grads_for(weights)

    combined = combine(g_va, g_vt, **params)
    obj = losses.objective(
        l_va, l_vt, valid_vt, vt_weight, None if weights is None else weights.w_va, None if weights is None else weights.w_vt
    )
    torch.autograd.backward([obj.total, video_rep], [torch.ones_like(obj.total), combined.to(video_rep.dtype)])
    n_text = int(valid_vt.sum())
    conflict_fraction = float(((cosine < 0) & valid_vt).sum()) / n_text if n_text else 0.0
    return StepStats(
        objective=losses.Objective(obj.total.detach(), obj.va.detach(), obj.vt.detach()),
        cosine=cosine.detach(),
        cosine_representation=cos_rep.detach(),
        weights=weights,
        conflict_fraction=conflict_fraction,
        extras=extras,
    )


class Harmonizer:
    """The ``pretrain.harmonize`` + ``pretrain.curriculum`` sections bound together, with rule state.

    Holds the rule's mutable state (``gradvac``'s EMA target) so that it can be checkpointed.
    """

    def __init__(
        self,
        rule: str = "none",
        *,
        project: str = "both",
        gradvac_beta: float = 0.01,
        meeting_point: str = "representation",
        parameter_blocks: int = 1,
        vt_weight: float = 1.0,
        curriculum: Curriculum | None = None,
        exact: bool = False,
    ) -> None:
        rules.get(rule)
        if meeting_point not in ("representation", "parameters"):
            raise ConfigError(f"pretrain.harmonize.meeting_point: {meeting_point!r} is not one of representation, parameters")
        self.rule, self.project, self.gradvac_beta = rule, project, float(gradvac_beta)
        self.meeting_point, self.parameter_blocks = meeting_point, int(parameter_blocks)
        self.vt_weight, self.curriculum, self.exact = float(vt_weight), curriculum, exact
        self.state: dict[str, Any] = {}

    @classmethod
    def from_config(cls, pretrain: Mapping[str, Any]) -> Harmonizer:
        h = pretrain["harmonize"]
        return cls(
            h["rule"],
            project=h["project"],
            gradvac_beta=h["gradvac_beta"],
            meeting_point=h["meeting_point"],
            parameter_blocks=h["parameter_blocks"],
            vt_weight=pretrain["vt_weight"],
            curriculum=Curriculum.from_config(pretrain),
        )

    @property
    def hidden_blocks(self) -> int:
        """What to pass as ``encode(batch, hidden_blocks=...)``: 0 unless the meeting point is the parameters."""
        return self.parameter_blocks if self.meeting_point == "parameters" else 0

    def backward(
        self,
        video_rep: Tensor,
        meet: Tensor,
        l_va: Tensor,
        l_vt: Tensor,
        valid_vt: Tensor,
        *,
        step: int = 0,
        tail: nn.Module | None = None,
        hidden: Tensor | None = None,
    ) -> StepStats:
        if self.meeting_point == "parameters" and (tail is None or hidden is None):
            raise ValueError("the parameters meeting point needs the tail module and its hidden state")
        return harmonized_backward(
            video_rep,
            meet,
            l_va,
            l_vt,
            valid_vt,
            vt_weight=self.vt_weight,
            rule=self.rule,
            rule_params={"project": self.project, "gradvac_beta": self.gradvac_beta, "state": self.state},
            curriculum=self.curriculum,
            step=step,
            exact=self.exact,
            tail=tail if self.meeting_point == "parameters" else None,
            hidden=hidden if self.meeting_point == "parameters" else None,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rule_state": dict(self.state), "curriculum": self.curriculum.state_dict() if self.curriculum else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state.clear()
        self.state.update(state.get("rule_state", {}))
        if self.curriculum is not None:
            self.curriculum.load_state_dict(state.get("curriculum", {}))


@dataclass
class ForwardOutput:
    """A VATT forward pass cut at the meeting point, with the per-sample losses."""

    video_rep: Tensor  # attached backbone output
    meet: Tensor  # detached leaf the heads read
    l_va: Tensor  # [B]
    l_vt: Tensor  # [B] (0 where no text)
    valid_vt: Tensor  # [B] bool
    hidden: Tensor | None  # input of the last blocks (parameters meeting point)
    outputs: dict[str, Tensor]


class RowGather(Protocol):
    """Concatenates a tensor's rows over data-parallel ranks (differentiably); ``rows`` = this rank's."""

    rows: slice

    def __call__(self, x: Tensor) -> Tensor: ...


def forward_losses(
    model: nn.Module, batch: Mapping[str, Tensor], temperature: float, hidden_blocks: int = 0, gather: RowGather | None = None
) -> ForwardOutput:
    """``model.encode`` -> cut at ``video_rep`` -> ``model.heads`` -> NCE and MIL-NCE per sample.

    ``model`` is a :class:`cmgh.models.VATT` (anything with ``encode``/``heads``). ``has_text``
    defaults to all True when absent from the batch. Under data parallelism ``gather`` brings
    every rank's embeddings together so that the negatives are the global batch's, as in VATT;
    the returned losses are this rank's rows of the global per-sample losses, so they equal
    what one process would compute on the whole batch.
    """
    reps = model.encode(batch, hidden_blocks=hidden_blocks) if hidden_blocks else model.encode(batch)
    cut, video_rep = detach_meeting_point(reps)
    z = model.heads(cut)
    has_text = batch.get("has_text")
    valid_vt = losses.text_valid(batch["text_mask"], has_text)
    if gather is None:
        l_va = losses.nce(z["z_va_video"], z["z_va_audio"], temperature)
        l_vt = losses.mil_nce(z["z_vat_video"], z["z_vat_text"], batch["text_mask"], temperature, valid=valid_vt)
    else:
        g = {k: gather(v) for k, v in z.items()}
        mask_all, valid_all = gather(batch["text_mask"]), gather(valid_vt)
        l_va = losses.nce(g["z_va_video"], g["z_va_audio"], temperature)[gather.rows]
        l_vt = losses.mil_nce(g["z_vat_video"], g["z_vat_text"], mask_all, temperature, valid=valid_all)[gather.rows]
    return ForwardOutput(video_rep, cut["video_rep"], l_va, l_vt, valid_vt, reps.get("video_hidden"), {**cut, **z})


def harmonized_step(
    model: nn.Module, batch: Mapping[str, Tensor], harmonizer: Harmonizer, temperature: float, step: int = 0
) -> StepStats:
    """Forward + harmonized backward of one batch (gradients accumulate into ``model``'s ``.grad``)."""
    out = forward_losses(model, batch, temperature, harmonizer.hidden_blocks)
    tail = model.video_tail(harmonizer.parameter_blocks) if harmonizer.meeting_point == "parameters" else None
    return harmonizer.backward(out.video_rep, out.meet, out.l_va, out.l_vt, out.valid_vt, step=step, tail=tail, hidden=out.hidden)

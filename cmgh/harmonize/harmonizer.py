"""The harmonized backward: per-sample gradients combined by a rule, then ONE backward pass.

**One backward.** :func:`harmonized_backward` takes the per-sample gradients at the meeting
point (:mod:`cmgh.harmonize.gradients`), combines them with the rule, then calls
``torch.autograd.backward([J_total, video_rep], [1, combined])`` once: the first term flows
through the heads (their parameters get the plain gradients of the weighted objective), through
``audio_rep``/``text_rep`` into the audio and text towers (their own objectives' gradients,
unchanged by the rule), and stops at the detached ``meet``; the second feeds the combined
gradient into the video pathway of the backbone. With rule ``none`` and no curriculum,
``combined = d J_total / d video_rep`` and every parameter gradient equals plain
``J_total.backward()``. Extra cost over a plain step: two to four small passes through the
heads and losses, no extra backbone pass.

With the ``parameters`` meeting point, the cosine over the tail parameters' per-sample gradients
drives the curriculum and the conflict statistics; the rule still combines at the representation
(one backward pass; an extra tail forward+backward per sample and objective: benchmarks/train_step.py).

With ``all_parameters`` (our reading of the abstract's "gradients of the shared parameters"; the
paper's method section was never available) the Gram of each triplet's two gradients over every
shared parameter (:mod:`cmgh.harmonize.ghost`, two cotangent passes and no
``[B,P]`` gradient) gives the cosine and the rule's coefficients, and the shared parameters
receive ``sum_i alpha_i g^a_i + beta_i g^b_i``, assembled from the stored cotangents in place of
the backward pass below the representation. A curriculum scored by the conflict that drops
triplets needs the Gram of the weighted objective too: a second pair of cotangent passes.

:class:`Harmonizer` binds the config sections to this; :func:`cmgh.harmonize.forward.forward_losses` is the
forward pass cut at the meeting point. The trainer's step (:func:`cmgh.train.step.train_step`) is the
one place both are called from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cmgh import losses
from cmgh.errors import ConfigError
from cmgh.harmonize import balance, batch_level, rules, upgrad
from cmgh.harmonize.balance import Balancer
from cmgh.harmonize.ranks import Collectives, SingleProcess, global_mean_losses, rank_shares
from cmgh.harmonize.curriculum import Curriculum, CurriculumWeights
from cmgh.harmonize.ghost import GhostGram
from cmgh.harmonize.gradients import objective_cotangents, parameter_gradients, per_sample_gradients, with_objective
from cmgh.harmonize.truth import GroundTruth

log = logging.getLogger(__name__)


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
    ghost: GhostGram | None = None,
    cut: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    truth: GroundTruth | None = None,
    valid_va: Tensor | None = None,
    granularity: str = "sample",
    objective_weights: tuple[float, float] = (1.0, 1.0),
    shared: Sequence[nn.Parameter] | None = None,
    ranks: Collectives | None = None,
) -> StepStats:
    """Combine the two objectives per sample and run ONE backward pass.

    1. Per-sample gradients at ``meet`` of ``J_va`` and ``lambda J_vt`` (through the heads only).
    2. Their per-sample Gram: at the representation; or over every shared parameter when
       ``ghost`` (the recorded forward of the shared pathway) and ``cut`` (each detached
       representation -> ``(attached, leaf)``) are given, the ``all_parameters`` meeting point;
       the cosine alone may instead come from the tail parameters if ``tail`` and ``hidden``
       are given (the ``parameters`` meeting point).
    3. Curriculum weights from the cosine, the losses or (controls) the ground truth ``truth``; with non-trivial
       weights the per-sample gradients (and Gram) are recomputed for the weighted objective.
    4. The rule (our reconstruction of CMGH's, a baseline or a control) turns each sample's Gram into
       coefficients ``alpha_i, beta_i``: the combined gradient is ``alpha_i g_va + beta_i g_vt``
       (a rule that reads other rows' gradients, ``random_partner``, combines the vectors).
    5. ``autograd.backward([J_total, video_rep], [1, combined])``: heads and audio/text towers
       get the gradients of the (weighted) objective, the video backbone gets ``combined``.
       At ``all_parameters``: ``J_total`` through the heads, and the shared parameters'
       combined gradients assembled from the stored cotangents (:meth:`GhostGram.assemble`).

    Rows without text have ``g_vt = 0`` and thus receive ``g_va`` only under every rule; rows
    without audio (``valid_va`` False; None: every row has audio) have ``g_va = 0`` alike. Only rows
    with both are scored, counted as conflicts and curated.
    ``video_rep`` is the backbone output, ``meet`` the detached leaf the heads read
    (:func:`detach_meeting_point`).

    ``granularity`` ``batch`` applies the rule once to the whole batch's two gradients
    (:mod:`cmgh.harmonize.batch_level`; at ``all_parameters`` it needs the ``shared`` parameters,
    and no ``ghost``). ``objective_weights`` are a balancer's multipliers ``(m_va, m_vt)`` of the
    two objectives (:mod:`cmgh.harmonize.balance`); a multiplier of 0 leaves that objective out of
    the graph, so the parameters only it reaches get no gradient. The logged objective stays the
    unmultiplied ``L_va + lambda L_vt``. ``ranks``: averages and gathers across data-parallel ranks.
    """
    if meet is video_rep or not meet.requires_grad or meet.grad_fn is not None:
        raise ValueError("meet must be the detached leaf the heads read (see detach_meeting_point)")
    if (ghost is None) != (cut is None):
        raise ValueError("the all_parameters meeting point needs both the recorded forward (ghost) and the cut")
    params = {**(rule_params or {}), "step": step}
    combine = rules.get(rule)
    if combine.needs_vectors and (ghost is not None or granularity != "sample"):
        raise ConfigError(f"pretrain.harmonize.rule: {rule!r} needs the gradient vectors of every sample and runs only at "
                          "granularity sample and meeting_point representation or parameters")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"pretrain.harmonize.granularity: {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    if granularity == "instance" and (rule != "upgrad" or ranks is not None and ranks.size > 1):
        raise ConfigError("pretrain.harmonize.granularity: instance runs rule upgrad in one process (its Gramian couples every "
                          "row of the global batch)")
    if granularity != "sample" and ghost is not None:
        raise ValueError(f"granularity {granularity} takes the shared parameters, not the per-sample recorder (ghost)")
    ranks = ranks or SingleProcess()
    m_va, m_vt = (float(m) for m in objective_weights)
    term_va = l_va if m_va != 0.0 else l_va.detach()  # an objective left out of this step (a balancer's 0) leaves the graph
    term_vt = l_vt if m_vt != 0.0 else l_vt.detach()
    if curriculum is not None:
        curriculum.require_truth(truth)
    valid_vt = valid_vt.bool()
    both = valid_vt if valid_va is None else valid_vt & valid_va.bool()  # rows with two objectives to compare
    recompute = curriculum is not None and curriculum.needs_cosine and curriculum.selecting(step)

    weights: CurriculumWeights | None = None
    if curriculum is not None and curriculum.active and not curriculum.needs_cosine:
        weights = curriculum(step, both, l_va=l_va, l_vt=l_vt, truth=truth, gather=ranks.gather)

    shares: dict[int, tuple[float, float]] = {}  # per weights object: rank_shares is a collective under data parallelism

    def shares_of(w: CurriculumWeights | None) -> tuple[float, float]:
        if id(w) not in shares:
            shares[id(w)] = rank_shares(w, valid_vt, valid_va, ranks)
        return shares[id(w)]

    def cotangents(w: CurriculumWeights | None) -> tuple[Tensor, Tensor]:
        c_va, c_vt = objective_cotangents(valid_vt, vt_weight, None if w is None else w.w_va, None if w is None else w.w_vt,
                                          l_va.shape[0], valid_va=valid_va)
        f_va, f_vt = shares_of(w)
        return m_va * f_va * c_va, m_vt * f_vt * c_vt

    def grams_for(w: CurriculumWeights | None, last: bool) -> tuple[Tensor, Tensor, rules.Gram]:
        """The representation gradients and the Gram at the meeting point, for the weights ``w``."""
        if ghost is None or cut is None:
            g_va, g_vt = per_sample_gradients(term_va, term_vt, meet, *cotangents(w), exact=exact)
            return g_va, g_vt, rules.Gram.of(g_va, g_vt)
        return ghost.measure(term_va, term_vt, cut, *cotangents(w), last=last, exact=exact)

    g_va, g_vt, gram = grams_for(weights, last=not recompute)
    cos_rep = rules.conflict_cosine(g_va, g_vt)
    cosine = gram.cosine()
    extras: dict[str, Any] = {}
    if tail is not None and hidden is not None:
        p_va, p_vt = parameter_gradients(tail, hidden, [g_va, g_vt])
        cosine = rules.conflict_cosine(p_va, p_vt)
        extras["parameter_grad_norms"] = (p_va.norm(dim=1).detach(), p_vt.norm(dim=1).detach())
    cosine = torch.where(both, cosine, torch.zeros_like(cosine))

    if curriculum is not None and curriculum.needs_cosine:
        weights = curriculum(step, both, cosine=cosine, l_va=l_va, l_vt=l_vt, truth=truth, gather=ranks.gather)
        # Decided by the schedule alone (not by this batch's weights) so that data-parallel ranks,
        # whose gradients cross a collective, always take the same branch.
        if recompute:
            g_va, g_vt, gram = grams_for(weights, last=True)

    w_va, w_vt = (None, None) if weights is None else (weights.w_va, weights.w_vt)
    f_va, f_vt = shares_of(weights)
    logged = losses.objective(l_va.detach(), l_vt.detach(), valid_vt, vt_weight, w_va, w_vt, valid_va)
    obj = losses.Objective(f_va * logged.va + vt_weight * f_vt * logged.vt, f_va * logged.va, f_vt * logged.vt)  # the ranks' mean: the global batch's
    va_part = losses.objective(term_va, term_vt.detach(), valid_vt, 0.0, w_va, w_vt, valid_va).va
    vt_part = losses.objective(term_va.detach(), term_vt, valid_vt, vt_weight, w_va, w_vt, valid_va).vt
    va_part, vt_part = m_va * f_va * va_part, m_vt * f_vt * vt_weight * vt_part
    total = va_part + vt_part  # what is differentiated
    if granularity == "batch" and shared is not None:
        grads_va = batch_level.objective_parameter_gradients(va_part, video_rep, g_va, shared, ranks)
        grads_vt = batch_level.objective_parameter_gradients(vt_part, video_rep, g_vt, shared, ranks)
        gram = batch_level.parameter_gram(grads_va, grads_vt)
        alpha, beta = combine.coefficients(gram, **params)
        if total.requires_grad:
            torch.autograd.backward([total], [torch.ones_like(total)])  # heads and the other towers: the plain gradients
        batch_level.write_combined(shared, alpha, beta, grads_va, grads_vt)
    elif ghost is not None:
        alpha, beta = combine.coefficients(gram, **params)
        if total.requires_grad:
            torch.autograd.backward([total], [torch.ones_like(total)])
        ghost.assemble(alpha, beta)
        ghost.release()
    else:  # the combined gradient at the representation, then ONE backward: heads and towers by `total`, backbone by it
        if granularity == "instance":
            c_va, c_vt = cotangents(weights)
            terms = upgrad.instance_terms(term_va, term_vt, c_va, c_vt)
            w = upgrad.upgrad_weights(upgrad.representation_gramian(terms, meet), reg_eps=upgrad.INSTANCE_REG_EPS)
            (combined,) = torch.autograd.grad(terms, meet, w.to(terms.dtype), retain_graph=True)
        elif granularity == "batch":
            alpha, beta = combine.coefficients(batch_level.batch_gram(gram, ranks), **params)
            combined = rules.combination(alpha.expand_as(gram.ab), beta.expand_as(gram.ab), g_va, g_vt)
        else:
            combined = combine.combine(g_va, g_vt, gram, **params)
        torch.autograd.backward(*with_objective(total, [video_rep], [combined.to(video_rep.dtype)]))
    n_both = int(both.sum())
    conflict_fraction = float(((cosine < 0) & both).sum()) / n_both if n_both else 0.0
    return StepStats(
        objective=obj,
        cosine=cosine.detach(),
        cosine_representation=cos_rep.detach(),
        weights=weights,
        conflict_fraction=conflict_fraction,
        extras=extras,
    )


MEETING_POINTS = ("representation", "parameters", "all_parameters")
# pretrain.harmonize.granularity: one rule per triplet, one for the whole batch, or every (sample, objective) term its own
# objective (instance-wise UPGrad)
GRANULARITIES = ("sample", "batch", "instance")
PER_SAMPLE = ("batch_mixed", "own")  # pretrain.harmonize.per_sample: cheap (default) or triplet-own gradients


class Harmonizer:
    """The ``pretrain.harmonize`` + ``pretrain.curriculum`` sections bound together, with the rule's
    mutable state (``gradvac``'s EMA target) so that it can be checkpointed."""

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
        per_sample: str | None = None,
        granularity: str = "sample",
        cagrad_c: float = 0.5,
        cagrad_rescale: bool = True,
        balancer: Balancer | None = None,
    ) -> None:
        if meeting_point not in MEETING_POINTS:
            raise ConfigError(f"pretrain.harmonize.meeting_point: {meeting_point!r} is not one of {', '.join(MEETING_POINTS)}")
        if per_sample is not None:
            if per_sample not in PER_SAMPLE:
                raise ConfigError(f"pretrain.harmonize.per_sample: {per_sample!r} is not one of {', '.join(PER_SAMPLE)}")
            exact = per_sample == "own"
            if exact:  # the update is assembled from the own gradients, so the negatives' terms never reach the backbone
                log.warning("pretrain.harmonize.per_sample: own is a known defect: the backbone's update omits the cross-sample "
                            "(negative) terms of the contrastive losses, so the video tower learns little (at the representation) "
                            "or nothing (at all_parameters: both losses stay at chance, ln B); compare, do not train, with it")
        if rules.get(rule).needs_vectors and meeting_point == "all_parameters":
            raise ConfigError(f"pretrain.harmonize.rule: {rule!r} needs the gradient vectors and cannot run at meeting_point all_parameters")
        if granularity not in GRANULARITIES:
            raise ConfigError(f"pretrain.harmonize.granularity: {granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if granularity == "batch" and meeting_point == "parameters":
            raise ConfigError("pretrain.harmonize.granularity: batch runs at meeting_point representation or all_parameters, not parameters")
        if granularity == "instance" and (rule != "upgrad" or meeting_point != "representation"):
            raise ConfigError("pretrain.harmonize.granularity: instance (every sample and objective its own objective) runs rule "
                              "upgrad at meeting_point representation; over the shared parameters its Gramian costs about 2B "
                              "backward passes a step (cmgh.harmonize.upgrad.ParameterGramian)")
        if granularity == "batch" and rules.get(rule).needs_vectors:
            raise ConfigError(f"pretrain.harmonize.rule: {rule!r} pairs samples with each other and has no batch-level form (granularity batch)")
        self.granularity, self.cagrad_c, self.cagrad_rescale = granularity, float(cagrad_c), bool(cagrad_rescale)
        self.balancer = balancer
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
            per_sample=h["per_sample"],
            granularity=h["granularity"],
            cagrad_c=h["cagrad"]["c"],
            cagrad_rescale=h["cagrad"]["rescale"],
            balancer=balance.from_config(pretrain),
        )

    @property
    def hidden_blocks(self) -> int:
        """What to pass as ``encode(batch, hidden_blocks=...)``: 0 unless the meeting point is the parameters."""
        return self.parameter_blocks if self.meeting_point == "parameters" else 0

    @property
    def records_shared(self) -> bool:
        """A step records the shared pathway's layers (:meth:`ghost_for`), which must then run eagerly (:mod:`cmgh.train.compile`)."""
        return self.meeting_point == "all_parameters" and self.granularity == "sample"

    def ghost_for(self, model: nn.Module) -> GhostGram | None:
        """The recorder of the shared pathway for one step at ``all_parameters`` per sample, else ``None``."""
        return GhostGram(model) if self.records_shared else None

    def shared_for(self, model: nn.Module) -> list[nn.Parameter] | None:
        """The shared parameters a batch-level rule reads at ``all_parameters`` (else ``None``: not needed)."""
        if self.meeting_point == "all_parameters" and self.granularity == "batch":
            return list(model.shared_parameters().values())  # type: ignore[operator]
        return None

    def objective_weights(self, step: int, l_va: Tensor, l_vt: Tensor, valid_vt: Tensor, valid_va: Tensor | None,
                          ranks: Collectives) -> tuple[float, float]:
        """The balancer's multipliers of the two objectives at ``step``, from the global batch's mean losses."""
        if self.balancer is None or self.balancer.name == "sum":
            return 1.0, 1.0
        means = global_mean_losses(l_va, l_vt, valid_vt, valid_va, ranks)
        return (1.0, 1.0) if means is None else self.balancer.weights(step, *means)  # None: a batch without one objective

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
        ghost: GhostGram | None = None,
        cut: Mapping[str, tuple[Tensor, Tensor]] | None = None,
        truth: GroundTruth | None = None,
        valid_va: Tensor | None = None,
        shared: Sequence[nn.Parameter] | None = None,
        ranks: Collectives | None = None,
    ) -> StepStats:
        """:func:`harmonized_backward` with this config; ``truth``: the batch's ground truth (control scorers only);
        ``valid_va``: rows with audio (None: all); ``shared``: see :meth:`shared_for`; ``ranks``: data-parallel collectives."""
        ranks = ranks or SingleProcess()
        if self.meeting_point == "parameters" and (tail is None or hidden is None):
            raise ValueError("the parameters meeting point needs the tail module and its hidden state")
        if self.meeting_point == "all_parameters" and self.granularity == "sample" and (ghost is None or cut is None):
            raise ValueError("the all_parameters meeting point needs the step's recorded forward (ghost_for) and its cut")
        if self.meeting_point == "all_parameters" and self.granularity == "batch" and shared is None:
            raise ValueError("a batch-level rule at all_parameters needs the shared parameters (shared_for)")
        return harmonized_backward(
            video_rep,
            meet,
            l_va,
            l_vt,
            valid_vt,
            vt_weight=self.vt_weight,
            rule=self.rule,
            rule_params={"project": self.project, "gradvac_beta": self.gradvac_beta, "state": self.state,
                         "cagrad_c": self.cagrad_c, "cagrad_rescale": self.cagrad_rescale},
            curriculum=self.curriculum,
            step=step,
            exact=self.exact,
            tail=tail if self.meeting_point == "parameters" else None,
            hidden=hidden if self.meeting_point == "parameters" else None,
            ghost=ghost if self.meeting_point == "all_parameters" else None,
            cut=cut if ghost is not None else None,  # the per-sample recorder's cut (a batch-level rule takes the shared parameters)
            truth=truth,
            valid_va=valid_va,
            granularity=self.granularity,
            objective_weights=self.objective_weights(step, l_va, l_vt, valid_vt, valid_va, ranks),
            shared=shared if self.granularity == "batch" else None,
            ranks=ranks,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rule_state": dict(self.state), "curriculum": self.curriculum.state_dict() if self.curriculum else {},
                "balance": self.balancer.state_dict() if self.balancer else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state.clear()
        self.state.update(state.get("rule_state", {}))
        if self.curriculum is not None:
            self.curriculum.load_state_dict(state.get("curriculum", {}))
        if self.balancer is not None and state.get("balance"):
            self.balancer.load_state_dict(state["balance"])

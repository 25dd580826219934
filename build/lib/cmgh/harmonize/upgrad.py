"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232) as a rival aggregation.

UPGrad projects every row ``g_i`` of the Jacobian onto the dual cone ``{y: <y, g_j> >= 0 for
all j}`` of all rows and adds the projections (weighted by a preference, ``1/m`` by default). It
depends on the rows only through their Gramian ``G = J J^T``: by the paper's Prop. 1, the
projection of ``J^T u`` is ``J^T v`` with ``v = argmin_v v^T G v subject to v >= u``, so the
update is ``J^T w`` with ``w = sum_i v_i`` and ``u_i = pref_i e_i`` (:func:`upgrad_weights`).
The update has a non-negative inner product with every row (``G w >= 0``): no objective gets worse
to first order.

Two uses here:

* ``upgrad``, a registered rule of :mod:`cmgh.harmonize.rules`: the two objectives of one
  sample (``m = 2``), closed form. It equals ``pcgrad`` (and ``cmgh`` with ``project: both``)
  exactly: it is the same update under another name, kept so that the rival is named.
* **Instance-wise UPGrad**: every (sample, objective) pair is its own objective, ``m = 2B`` rows
  ``r_k = grad(m c_k l_k)`` (:func:`instance_terms`; ``c`` are the objective's cotangents, so the
  mean preference without conflict gives exactly the plain gradient). A row is the gradient of
  one loss term over the WHOLE batch's representation or parameters, negatives included (unlike
  the per-sample ``own`` gradients). Its Gramian comes from the representation
  (:func:`representation_gramian`, one batched VJP through the heads) or from the shared
  parameters (:func:`parameter_gramian` with a :class:`ParameterGramian`: torchjd's autogram
  ``Engine``, which builds the Gramian module by module without the whole ``[m, P]`` Jacobian;
  about ``m`` backward passes' work, so ``B``-fold a plain step's cost).
  The update is the gradient of ``sum_k w_k terms_k``: one backward of that weighted sum.

Harmonizer use (representation)::

    terms = instance_terms(l_va, l_vt, c_va, c_vt)
    w = upgrad_weights(representation_gramian(terms, meet))
    (combined,) = torch.autograd.grad(terms, meet, w, retain_graph=True)   # [B, D], fed to video_rep

(all_parameters)::

    grams = ParameterGramian.shared(model)
    with grams.recording():                       # the Engine's hooks see the forward
        fwd = forward_losses(model, batch, tau, detach=grams.meeting_keys)
    terms = instance_terms(fwd.l_va, fwd.l_vt, c_va, c_vt)
    w = upgrad_weights(parameter_gramian(terms, grams, cut=fwd.cut))
    seeds = torch.autograd.grad(terms, [leaf for _, leaf in fwd.cut.values()], w, retain_graph=True, allow_unused=True)
    # then one backward: the attached representations with these seeds (and J_total through the heads)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from cmgh.harmonize import rules
from cmgh.harmonize.rules import Gram

_EPS = 1e-12
NORM_EPS = 1e-4  # torchjd's QuadprogProjector: a Gramian of trace below this is treated as zero
REG_EPS = 1e-4  # torchjd's QuadprogProjector: added to the diagonal of the trace-normalised Gramian
INSTANCE_REG_EPS = 1e-8  # the trainer's: 1e-4 shrank the weights by 40 % at m = 128 and left rows conflicting; 1e-8 is exact there
SOLVERS = ("pivoting", "torchjd")


# -- weights -----------------------------------------------------------------------------------------


def upgrad_weights(
    gramian: Tensor,
    pref: Tensor | None = None,
    *,
    norm_eps: float = NORM_EPS,
    reg_eps: float = REG_EPS,
    solver: str = "pivoting",
) -> Tensor:
    """UPGrad's weights ``w [m]`` of a Gramian ``[m, m]``: ``w = sum_i v_i``, ``v_i = argmin v^T G v s.t. v >= pref_i e_i``.

    Regularised exactly as torchjd 0.18's ``QuadprogProjector`` (the default projector of
    ``UPGradWeighting``), so both solvers solve the same problem: ``G`` is divided by its trace
    (the QP's solution does not depend on ``G``'s scale), replaced by zero when the trace is below
    ``norm_eps`` (all rows tiny: the weights are the preference, i.e. the plain mean), and
    ``reg_eps I`` is added, which makes a PSD-but-singular Gramian positive definite. The weights
    are those of the regularised problem: ``G w >= 0`` holds exactly for ``G / tr G + reg_eps I``,
    for ``G`` itself up to ``O(reg_eps tr G)``; ``reg_eps = 0`` gives the exact UPGrad of a
    positive definite ``G``. The normalised eigenvalues average ``1/m``, so the default weighs
    more as ``m`` grows: on the mini model's instance Gramian at the representation (``m = 128``)
    it cut ``sum(w)`` from 31.6 to 18.0 and left ``min (G w)_k`` at -0.3 % of ``max |G|``, where
    ``reg_eps = 1e-8`` is exact to rounding; instance-wise use should pass a small ``reg_eps``.

    Rows with a zero diagonal are zero rows (a sample without text: its video-text row): with the
    regulariser their component of every ``v_i`` is ``u_i``'s, so their weight is their
    preference and the other weights are those of the Gramian without them; they are left out
    of the solves.

    ``solver``: ``pivoting`` (ours, exact): with ``v = u_i + x`` each QP is the linear
    complementarity problem ``x >= 0, y = G x + G u_i >= 0, x.y = 0``, solved by block principal
    pivoting (Judice & Pires 1994, as in Kim & Park's NNLS 2011: exchange every infeasible index,
    Murty's single exchange as the backup that guarantees termination for a positive definite
    ``G``), typically 3-5 small Cholesky solves per row; a row whose column of ``G`` has no
    negative entry conflicts with nothing and skips the solve (``v_i = u_i``). ``torchjd``:
    ``torchjd.aggregation.UPGradWeighting`` (quadprog, one dense QP per row).
    """
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
        raise ValueError(f"the Gramian must be square [m, m], got {list(gramian.shape)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r} is not one of {', '.join(SOLVERS)}")
    m = gramian.shape[0]
    p = torch.full((m,), 1.0 / max(m, 1), dtype=torch.float64) if pref is None else pref.detach().to("cpu", torch.float64)
    if p.shape != (m,) or bool((p < 0).any()):
        raise ValueError(f"the preference must be a non-negative vector of {m} entries")
    g = gramian.detach().to("cpu", torch.float64)
    if solver == "torchjd":
        from torchjd.aggregation import UPGradWeighting
        from torchjd.linalg import QuadprogProjector

        weighting = UPGradWeighting(p, projector=QuadprogProjector(norm_eps=norm_eps, reg_eps=reg_eps))
        return weighting(g).to(gramian.device, gramian.dtype)
    g = (g + g.T) / 2
    trace = float(g.trace())
    g = g / trace if trace >= norm_eps else torch.zeros_like(g)
    w = p.clone()
    live = (g.diagonal() > 0).nonzero().flatten()
    if live.numel():
        with _one_thread():
            w[live] = _dual_cone_weights(g[live][:, live] + reg_eps * torch.eye(live.numel(), dtype=g.dtype), p[live])
    return w.to(gramian.device, gramian.dtype)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Many small factorisations: one thread (on 2 busy cores a 256x256 Cholesky took 15 ms with 2 threads, 0.5 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dual_cone_weights(g: Tensor, pref: Tensor) -> Tensor:
    """``sum_i argmin_{v >= pref_i e_i} v^T g v`` for a positive definite ``g`` (float64, CPU)."""
    if int(torch.linalg.cholesky_ex(g).info) != 0:
        raise ValueError("the Gramian is singular: UPGrad needs reg_eps > 0 (or a positive definite Gramian)")
    w = pref.clone()
    conflicting = (g < 0).any(dim=0) & (pref > 0)  # G u_i >= 0 already: v_i = u_i meets the KKT conditions
    for i in conflicting.nonzero().flatten().tolist():
        w += _complementarity(g, pref[i] * g[:, i])
    return w


def _complementarity(g: Tensor, q: Tensor) -> Tensor:
    """The ``x`` of ``x >= 0, y = g x + q >= 0, x.y = 0`` (``g`` positive definite): block principal pivoting.

    ``free`` is the guessed support of ``x``: ``x_free`` solves ``y_free = 0``, the rest is 0. The
    infeasible indices (``x_j < 0`` on the support, ``y_j < 0`` off it) all switch sides while
    their number keeps falling (three tries without progress allowed); then only the last one
    does (Murty's rule, finite for a P-matrix).
    """
    m = q.shape[0]
    free = torch.zeros(m, dtype=torch.bool)
    fewest, chances = m + 1, 3
    for _ in range(10 * m + 10):
        x = torch.zeros_like(q)
        idx = free.nonzero().flatten()
        if idx.numel():
            factor = torch.linalg.cholesky(g[idx][:, idx])
            x[idx] = torch.cholesky_solve(-q[idx, None], factor)[:, 0]
        y = g @ x + q
        tol = 1e-12 * max(float(q.abs().max()), float(x.abs().max()))
        bad = torch.where(free, x < -tol, y < -tol)
        n = int(bad.sum())
        if n == 0:
            return x.clamp_min(0)
        if n < fewest:
            fewest, chances = n, 3
            free ^= bad
        elif chances > 0:
            chances -= 1
            free ^= bad
        else:
            j = int(bad.nonzero().max())
            free[j] = ~free[j]
    raise RuntimeError("UPGrad: the projection onto the dual cone did not converge")


def pair_weights(gram: Gram) -> tuple[Tensor, Tensor]:
    """UPGrad's weights (preference 1/2 each) for the two objectives of every sample, in closed form.

    For one sample, ``G = [[aa, ab], [ab, bb]]``. Row ``va``'s QP, ``min v^T G v s.t. v_1 >= 1/2,
    v_2 >= 0``, has the KKT conditions ``G v = mu >= 0``, ``mu_1 (v_1 - 1/2) = 0``, ``mu_2 v_2 = 0``.
    If ``ab >= 0``, ``v = (1/2, 0)`` satisfies them (``G v = (aa, ab)/2 >= 0``). If ``ab < 0``,
    ``v_2 = 0`` would give ``mu_2 = ab/2 < 0``, so ``v_2 > 0`` and ``mu_2 = 0``: with ``v_1 = 1/2``,
    ``v_2 = -ab / (2 bb)`` and ``mu_1 = (aa bb - ab^2) / (2 bb) >= 0`` (Cauchy-Schwarz), so that is
    the optimum. Symmetrically row ``vt`` gives ``(-ab / (2 aa), 1/2)``. Summed:

        w_va = (1 - ab/aa) / 2,   w_vt = (1 - ab/bb) / 2    on conflicting rows (ab < 0), else (1/2, 1/2)

    i.e. exactly half of PCGrad's coefficients (``pcgrad``: ``1 - ab/aa``, ``1 - ab/bb``). A zero
    gradient (no text) has ``ab = 0``: no conflict. Unregularised (``reg_eps = 0`` in
    :func:`upgrad_weights`'s terms).
    """
    conflict = gram.ab < 0
    zero = torch.zeros_like(gram.ab)
    w_va = 0.5 * (1.0 - torch.where(conflict, gram.ab / gram.aa.clamp_min(_EPS), zero))
    w_vt = 0.5 * (1.0 - torch.where(conflict, gram.ab / gram.bb.clamp_min(_EPS), zero))
    return w_va, w_vt


@rules.register("upgrad")
def upgrad(gram: Gram, **_: Any) -> tuple[Tensor, Tensor]:
    """UPGrad (Quinton & Rey 2024) per sample for the two objectives: identical to pcgrad and cmgh(project=both).

    The weights of :func:`pair_weights` scaled by ``m = 2`` (UPGrad's mean preference ``1/m``
    times ``m``), so that a sample without conflict gets the plain sum ``g_va + g_vt`` as under
    every other rule. With two objectives UPGrad's projections onto the dual cone are PCGrad's
    projections onto the normal planes, so the coefficients are PCGrad's: ``1 - ab/aa`` and
    ``1 - ab/bb`` on conflicting rows.
    """
    w_va, w_vt = pair_weights(gram)
    return 2.0 * w_va, 2.0 * w_vt


# -- instance-wise UPGrad: the (sample, objective) terms and their Gramian ------------------------------


def instance_terms(l_va: Tensor, l_vt: Tensor, c_va: Tensor, c_vt: Tensor) -> Tensor:
    """The ``m = 2B`` objectives of instance-wise UPGrad: ``m * (c_va l_va ; c_vt l_vt)``.

    ``c``: the objective's cotangents (:func:`cmgh.harmonize.gradients.objective_cotangents`), so
    that ``sum_k terms_k / m = J_total``: the mean preference without conflict gives exactly the
    plain gradient. A term with ``c_k = 0`` (no text, no audio) is a zero row.
    """
    terms = torch.cat([c_va.to(l_va.dtype) * l_va, c_vt.to(l_vt.dtype) * l_vt])
    return terms * terms.shape[0]


def leaf_jacobians(losses: Tensor, leaves: Sequence[Tensor]) -> list[Tensor]:
    """``d losses_k / d leaf`` for every leaf, ``[m, *leaf.shape]`` (zeros where unused): one batched VJP, graph retained."""
    m = losses.shape[0]
    if not losses.requires_grad:
        return [leaf.new_zeros(m, *leaf.shape) for leaf in leaves]
    eye = torch.eye(m, dtype=losses.dtype, device=losses.device)
    jacs = torch.autograd.grad(losses, list(leaves), eye, retain_graph=True, is_grads_batched=True, allow_unused=True)
    return [leaf.new_zeros(m, *leaf.shape) if j is None else j for leaf, j in zip(leaves, jacs, strict=True)]


def _gramian_of(jacobians: Sequence[Tensor]) -> Tensor:
    """``sum J J^T`` over ``[m, ...]`` Jacobian blocks."""
    flat = [j.reshape(j.shape[0], -1) for j in jacobians]
    return sum((f @ f.T for f in flat[1:]), flat[0] @ flat[0].T)


def representation_gramian(losses: Tensor, meet: Tensor | Sequence[Tensor]) -> Tensor:
    """The Gramian ``[m, m]`` of the losses' gradients at the representation leaf (or leaves).

    Row ``k`` is the gradient of ``losses_k`` with respect to the WHOLE batch's representation
    ``meet [B, D]``: through the contrastive negatives it reaches other samples' rows too, which
    the per-sample ``own`` gradients leave out. One batched VJP through the heads (graph retained).
    """
    leaves = [meet] if isinstance(meet, Tensor) else list(meet)
    return _gramian_of(leaf_jacobians(losses, leaves))


def through_cut(losses: Tensor, cut: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Carry the losses below a cut: ``s_k = sum_key <attached_key, d losses_k / d leaf_key>`` ``[m]``.

    The heads read detached leaves (``cut``: key -> ``(attached, leaf)``, as
    :func:`cmgh.harmonize.forward_losses` returns), so the losses' graph stops there; by the chain
    rule ``s`` has the losses' Jacobian with respect to every parameter below the cut. Every key
    keeps its edge (zeros where a loss does not read it), so each recorded call below is reached.
    """
    keys = list(cut)
    jacs = leaf_jacobians(losses, [cut[k][1] for k in keys])
    parts = [(cut[k][0].unsqueeze(0) * j.detach().to(cut[k][0].dtype)).flatten(1).sum(1) for k, j in zip(keys, jacs, strict=True)]
    return torch.stack(parts).sum(0)


class ParameterGramian:
    """The Gramian of per-loss gradients over a set of parameters, by torchjd's autogram ``Engine`` (Quinton & Rey 2024, Alg. 3).

    The Engine hooks ``modules`` during the forward pass and, on a vmapped backward of the
    losses, builds one module's ``[m, P_module]`` Jacobian block at a time and adds its Gramian:
    the ``[m, P]`` Jacobian of the whole network is never held (memory, not time: the vmapped
    backward is ``m`` backward passes' work either way, and on the mini model it was no faster
    than :func:`materialised_gramian`). ``batch_dim=None``: our losses couple the batch
    (contrastive negatives), so torchjd's per-sample shortcut does not apply. The Engine sees a
    parameter only through its module's own forward call (a documented limit); parameters used
    otherwise (VATT's ``[AGG]`` tokens, read by ``Backbone.prefix`` from a ``ParameterDict``) are
    ``loose`` and get their block from a direct batched VJP, a second vmapped backward through
    the Transformer. One per step: :meth:`recording` around the forward, then
    :func:`parameter_gramian`.
    """

    def __init__(self, modules: Sequence[nn.Module], params: Sequence[Tensor], meeting_keys: Sequence[str] = ("video_rep",)) -> None:
        owned = {id(p) for p in params}
        seen: set[int] = set()
        for module in modules:
            for name, p in module.named_parameters():
                if id(p) not in owned:
                    raise ValueError(f"module parameter {name!r} is not among the parameters of the Gramian")
                seen.add(id(p))
        self.modules = tuple(modules)
        self.loose = [p for p in params if id(p) not in seen]
        self.meeting_keys = tuple(meeting_keys)
        self._engine: Any = None

    @classmethod
    def shared(cls, model: nn.Module) -> ParameterGramian:
        """VATT's shared parameters (:meth:`cmgh.models.VATT.shared_parameters`): video tokenizer, video Transformer, video ``[AGG]``."""
        transformer: nn.Module = model.backbone.transformer("video")  # type: ignore[operator, union-attr]
        video_tok: nn.Module = model.video_tok  # type: ignore[assignment]
        shares = model.backbone.transformer("audio") is transformer  # type: ignore[operator, union-attr]
        keys = ("video_rep", "audio_rep", "text_rep") if shares else ("video_rep",)
        return cls((video_tok, transformer), list(model.shared_parameters().values()), keys)  # type: ignore[operator]

    @contextmanager
    def recording(self) -> Iterator[ParameterGramian]:
        """The Engine's hooks on the modules for the duration of one forward pass (its graph keeps what it needs)."""
        from torchjd.autogram import Engine

        self._engine = Engine(*self.modules, batch_dim=None)
        try:
            yield self
        finally:  # the recorded graph keeps its nodes; later forwards must not add calls the Gramian would wait for
            self._engine._module_hook_manager._finalizer()  # removes the hooks (torchjd 0.18 keeps them until collection)

    def __call__(self, outputs: Tensor) -> Tensor:
        """The Gramian of ``outputs [m]`` (attached below the modules) over the parameters."""
        if self._engine is None:
            raise RuntimeError("ParameterGramian: record the forward pass first (with .recording())")
        gram = self._engine.compute_gramian(outputs)
        self._engine = None
        if self.loose:
            gram = gram + materialised_gramian(outputs, self.loose)
        return gram


def materialised_gramian(outputs: Tensor, params: Sequence[Tensor]) -> Tensor:
    """``J J^T`` with the Jacobian ``J [m, P]`` of ``outputs`` over ``params`` materialised (one batched VJP, graph retained)."""
    m = outputs.shape[0]
    eye = torch.eye(m, dtype=outputs.dtype, device=outputs.device)
    jacs = torch.autograd.grad(outputs, list(params), eye, retain_graph=True, is_grads_batched=True, allow_unused=True)
    return _gramian_of([outputs.new_zeros(m, 1) if j is None else j for j in jacs])


def parameter_gramian(losses: Tensor, params: ParameterGramian | Sequence[Tensor], cut: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """The Gramian ``[m, m]`` of the losses' gradients over parameters.

    ``params``: a :class:`ParameterGramian` that recorded the forward (torchjd's Engine), or the
    parameters themselves (the direct route: the Jacobian materialised, :func:`materialised_gramian`).
    ``cut``: the detached representations the heads read (:func:`through_cut`); ``None`` when the
    losses are attached to the parameters.
    """
    outputs = losses if cut is None else through_cut(losses, cut)
    if isinstance(params, ParameterGramian):
        return params(outputs)
    return materialised_gramian(outputs, params)


def instance_upgrad_weights(
    l_va: Tensor,
    l_vt: Tensor,
    c_va: Tensor,
    c_vt: Tensor,
    gramian: Callable[[Tensor], Tensor],
    *,
    pref: Tensor | None = None,
    **solver: Any,
) -> tuple[Tensor, Tensor]:
    """Instance-wise UPGrad: ``(terms [2B], w [2B])``; the update is the gradient of ``sum_k w_k terms_k``.

    ``gramian``: the terms' Gramian where they meet, e.g. ``lambda t: representation_gramian(t, meet)``
    or ``lambda t: parameter_gramian(t, recorded, cut=fwd.cut)``. Without conflict (every
    off-diagonal ``>= 0``) ``w = 1/m`` and the update is the plain gradient of ``J_total``.
    """
    terms = instance_terms(l_va, l_vt, c_va, c_vt)
    return terms, upgrad_weights(gramian(terms), pref, **solver)

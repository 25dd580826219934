"""``pretrain.compile``: which parts of the model ``torch.compile`` compiles, and which stay eager.

The trainer never calls ``model.forward``: it calls the tokenizers, the backbone's Transformers and
the heads one at a time (:meth:`cmgh.models.VATT.encode`, :meth:`~cmgh.models.VATT.heads`). The
*regions* compiled are the tokenizers and each distinct Transformer, each in place
(``nn.Module.compile``: ``state_dict`` keys and checkpoints stay those of the plain model). Each
call of a region is one autograd node, so an objective a step leaves out of the graph (a
balancer's multiplier of 0) still leaves its modality's tower without a gradient, as in eager.

Eager by design:

* the heads: they cost nothing next to the backbone, and the harmonizer differentiates through them
  several times a step (per-sample gradients, batched for ``per_sample: own`` and instance-wise
  UPGrad). Compiled as one region they would also give the parameters of an objective left out of
  a step zero gradients instead of none (AdamW would then decay its moments);
* the shared pathway under the ``all_parameters`` recorder (:class:`cmgh.harmonize.ghost.GhostGram`,
  ``meeting_point: all_parameters`` at ``granularity: sample``): its module and tensor hooks need
  every shared layer's output in the eager autograd graph, where the two cotangent passes stop and
  read it. A compiled region is one node whose intermediates are off the path from the loss (in
  ``ms`` the Gram would be silently wrong, in ``ma`` Dynamo fails; the recorder refuses either).
  There the video tokenizer and the video Transformer (in ``ma`` the one Transformer) run eagerly,
  and the audio and text tokenizers and ``ms``'s audio and text Transformers compile.

Batch-level rules at ``all_parameters`` run one backward pass per objective through the backbone
(graph retained), which AOTAutograd's donated buffers forbid: they are turned off there only (a
process-wide switch, read at compile and at backward time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from cmgh.errors import ConfigError
from cmgh.harmonize import Harmonizer
from cmgh.models.backbones import MODALITIES

log = logging.getLogger(__name__)

BACKENDS = ("inductor", "aot_eager", "eager")  # pretrain.compile_backend
RECOMPILE_LIMIT = 32  # versions of one region's code Dynamo keeps (see compile_model)
EAGER_SHARED = ("meeting_point all_parameters records every shared layer's output for its per-sample Gram "
                "(its hooks need them in the eager autograd graph)")


@dataclass(frozen=True)
class CompilePlan:
    """The regions ``pretrain.compile`` compiles and the candidate regions it leaves eager, by module path."""

    compiled: tuple[str, ...]
    eager: tuple[str, ...]
    reason: str = ""  # why the eager ones are eager ("" when none is)
    retains_graph: bool = False  # a region is differentiated more than once a step: no donated buffers


def regions(model: nn.Module) -> dict[str, nn.Module]:
    """The candidate regions by module path: the three tokenizers and each distinct Transformer."""
    paths = {id(m): name for name, m in model.named_modules()}
    found = [getattr(model, name) for name in ("video_tok", "audio_tok", "text_tok")]
    found += [model.backbone.transformer(m) for m in MODALITIES]  # type: ignore[operator]
    return {paths[id(m)]: m for m in found}  # (ma: one Transformer for the three)


def plan(model: nn.Module, harmonizer: Harmonizer) -> CompilePlan:
    """Every region compiled, except the shared pathway the ``all_parameters`` recorder hooks."""
    names = regions(model)
    eager: tuple[str, ...] = ()
    if harmonizer.records_shared:
        shared = {id(p) for p in model.shared_parameters().values()}  # type: ignore[operator]
        eager = tuple(n for n, m in names.items() if any(id(p) in shared for p in m.parameters()))
    retains = harmonizer.meeting_point == "all_parameters" and harmonizer.granularity == "batch"
    return CompilePlan(tuple(n for n in names if n not in eager), eager, EAGER_SHARED if eager else "", retains)


def check_backend(backend: str, device: torch.device) -> None:
    """Refuse, before training, a backend this machine cannot run (Inductor needs a C++ compiler on CPU, Triton on CUDA)."""
    if backend not in BACKENDS:
        raise ConfigError(f"pretrain.compile_backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "inductor":
        return
    if device.type == "cpu":
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            raise ConfigError("pretrain.compile: true with compile_backend inductor needs a C++ compiler on CPU (g++, or $CXX) "
                              "and none was found: install one, or set pretrain.compile_backend: aot_eager, or compile: false") from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("pretrain.compile: true with compile_backend inductor needs Triton on CUDA and it is not installed: "
                              "install triton, or set pretrain.compile_backend: aot_eager, or compile: false")


def compile_model(model: nn.Module, harmonizer: Harmonizer, backend: str = "inductor", device: torch.device | None = None) -> CompilePlan:
    """Compile ``model``'s regions in place per :func:`plan`; refuses an unusable ``backend`` first."""
    check_backend(backend, device or next(model.parameters()).device)
    chosen = plan(model, harmonizer)
    names = regions(model)
    if chosen.retains_graph:
        # Read when a region compiles and again when its backward runs: a process-wide switch (a training
        # process runs one configuration). Donated buffers only save backward memory.
        from torch._functorch import config as functorch_config

        functorch_config.donated_buffer = False
    # One code object per region type (the three Transformers of ms share Transformer.forward) compiled per
    # modality, mask, block range, mode, precision and backend: more than Dynamo's default 8 versions, after
    # which it would silently run the region eagerly.
    torch._dynamo.config.recompile_limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
    for name in chosen.compiled:
        names[name].compile(backend=backend)
    eager = f"; eager: {', '.join(chosen.eager)} ({chosen.reason})" if chosen.eager else ""
    log.info("pretrain.compile (%s): compiled %s%s; heads eager", backend, ", ".join(chosen.compiled), eager)
    return chosen

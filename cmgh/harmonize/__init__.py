"""Cross-modality gradient harmonization (CMGH, Wu et al. NeurIPS 2022, Sec. 3.2 and 3.3): the method in one package.

``rules``: the registry of realignment rules (``none``, ``cmgh``, ``pcgrad``, ``gradvac``), each the
coefficients ``(alpha, beta)`` of a per-sample :class:`Gram`, and :func:`conflict_cosine`.
``curriculum``: per-triplet noisiness scores and the keep schedule (Sec. 3.3).
``gradients``: per-sample gradients at the meeting point (representation or tail parameters).
``ghost``: exact per-sample Gram matrices over every shared parameter (meeting point ``all_parameters``).
``harmonizer``: the single harmonized backward, :class:`Harmonizer` and the forward cut at the meeting point.
"""

from cmgh.harmonize.gradients import detach_meeting_point, objective_cotangents, parameter_gradients, per_sample_gradients
from cmgh.harmonize.harmonizer import ForwardOutput, Harmonizer, StepStats, forward_losses, harmonized_backward
from cmgh.harmonize.rules import Gram, conflict_cosine, get, names, pcgrad_tasks, register

__all__ = [
    "ForwardOutput",
    "Gram",
    "Harmonizer",
    "StepStats",
    "conflict_cosine",
    "detach_meeting_point",
    "forward_losses",
    "get",
    "harmonized_backward",
    "names",
    "objective_cotangents",
    "parameter_gradients",
    "pcgrad_tasks",
    "per_sample_gradients",
    "register",
]

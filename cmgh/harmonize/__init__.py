"""Cross-modality gradient harmonization (CMGH, Wu et al. NeurIPS 2022, Sec. 3.2).

``rules``: the registry of realignment rules (``none``, ``cmgh``, ``pcgrad``, ``gradvac``), each
``(g_va [B,D], g_vt [B,D], **params) -> [B,D]``, and :func:`conflict_cosine`.
``gradients``: per-sample gradients at the meeting point and the single harmonized backward.
"""

from cmgh.harmonize.gradients import (
    ForwardOutput,
    Harmonizer,
    StepStats,
    detach_meeting_point,
    forward_losses,
    harmonized_backward,
    harmonized_step,
    objective_cotangents,
    parameter_gradients,
    per_sample_gradients,
)
from cmgh.harmonize.rules import conflict_cosine, get, names, pcgrad_tasks, register

__all__ = [
    "ForwardOutput",
    "Harmonizer",
    "StepStats",
    "conflict_cosine",
    "detach_meeting_point",
    "forward_losses",
    "get",
    "harmonized_backward",
    "harmonized_step",
    "names",
    "objective_cotangents",
    "parameter_gradients",
    "pcgrad_tasks",
    "per_sample_gradients",
    "register",
]

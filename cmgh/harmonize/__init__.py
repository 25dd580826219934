"""Cross-modality gradient harmonization (CMGH, Wu et al. NeurIPS 2022, reconstructed from its abstract): the method in one package.

``rules``: the registry of realignment rules (``none``, ``cmgh``, ``pcgrad``, ``gradvac``), each the
coefficients ``(alpha, beta)`` of a per-sample :class:`Gram`, and :func:`conflict_cosine`.
``controls``: the mechanism controls ``norm_matched`` and ``random_partner``, registered as rules.
``curriculum``: the selection rules and the keep schedule; ``scorers``: per-triplet noisiness
(``conflict``, ``loss``, and the ground-truth controls ``oracle`` and ``quality``).
``truth``: the batch keys of the generator's ground truth, read only by the control scorers.
``gradients``: per-sample gradients at the meeting point (representation or tail parameters).
``ghost``: exact per-sample Gram matrices over every shared parameter (meeting point ``all_parameters``).
``harmonizer``: the single harmonized backward and :class:`Harmonizer`; ``forward``: the forward cut at the meeting point.
"""

from cmgh.harmonize import cagrad, controls, upgrad  # noqa: F401  (register the CAGrad, mechanism-control and UPGrad rules)
from cmgh.harmonize.gradients import detach_meeting_point, objective_cotangents, parameter_gradients, per_sample_gradients
from cmgh.harmonize.forward import ForwardOutput, forward_losses
from cmgh.harmonize.harmonizer import Harmonizer, StepStats, harmonized_backward
from cmgh.harmonize.rules import Gram, conflict_cosine, described, get, names, pcgrad_tasks, register
from cmgh.harmonize.truth import GroundTruth, ground_truth

__all__ = [
    "ForwardOutput",
    "Gram",
    "GroundTruth",
    "Harmonizer",
    "StepStats",
    "conflict_cosine",
    "described",
    "detach_meeting_point",
    "forward_losses",
    "get",
    "ground_truth",
    "harmonized_backward",
    "names",
    "objective_cotangents",
    "parameter_gradients",
    "pcgrad_tasks",
    "per_sample_gradients",
    "register",
]

"""A results tree of fake metrics: metrics.json per task, variant and seed with deterministic values,
shared by the report's table, summary, statistics and scaling tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cmgh import config as config_mod
from cmgh import layout

FAKE_METRICS = {
    "kinetics": {"top1": (60.0, 10.0), "top5": (85.0, 5.0)},
    "audioset": {"mAP": (0.3, 0.05), "mAUC": (0.8, 0.05), "d_prime": (1.2, 0.2)},
    "msrvtt": {"t2v_R@1": (20.0, 5.0), "t2v_R@5": (50.0, 5.0), "t2v_R@10": (65.0, 5.0), "t2v_MedR": (5.0, 1.0)},
    "noise": {f"auroc/{name}/either": (0.6, 0.05) for name in
              ("cos_representation", "cos_representation_exact", "cos_parameters", "loss_va", "loss_vt", "loss_total")},
}
DEFAULT_VARIANTS = ("baseline", "gr", "gcl", "gr_gcl")


def fake_results(root: Path, variants: tuple[str, ...] = DEFAULT_VARIANTS, resolved: bool = True) -> Path:
    """metrics.json for random init + ``variants`` x 3 seeds, deterministic values (a trend over the
    variants plus a per-seed wobble); gcl has a single MSR-VTT seed and gr one missing d'."""
    for v_i, variant in enumerate(("random", *variants)):
        for seed in (0, 1, 2):
            for task, metrics in FAKE_METRICS.items():
                if (variant == "random" and task == "noise") or (variant == "gcl" and task == "msrvtt" and seed > 0):
                    continue
                data: dict[str, object] = {k: round(mu + sd * (0.3 * v_i + math.sin(1.7 * v_i + 2.3 * seed + 0.9 * k_i)), 4)
                                           for k_i, (k, (mu, sd)) in enumerate(metrics.items())}
                if variant == "gr" and task == "audioset" and seed == 2:
                    data["d_prime"] = None
                path = layout.eval_metrics(root, task, "ms", variant, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({**data, "meta": {"task": task}, "ok": True}))
    if resolved:  # as the workflow writes it: the config's variants, in its order
        tree = config_mod.load().to_dict()
        tree["variants"] = {v: tree["variants"].get(v, {"pretrain": {"harmonize": {"rule": v}}}) for v in variants}
        layout.resolved_config(root).parent.mkdir(parents=True, exist_ok=True)
        layout.resolved_config(root).write_text(config_mod.from_dict(tree).to_yaml())
    return root

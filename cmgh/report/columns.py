"""Which metric goes in which column of the report, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass

# The evaluation's indicator list, referenced (not copied) so a new indicator gets its column.
from cmgh.evaluate import NOISE_INDICATORS  # import-free: no torch


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    label: str
    lower_is_better: bool = False
    digits: int = 1


ABLATION_COLUMNS: tuple[Column, ...] = (
    Column("kinetics", "top1", "K top-1"),
    Column("kinetics", "top5", "K top-5"),
    Column("audioset", "mAP", "AS mAP", digits=3),
    Column("audioset", "mAUC", "AS mAUC", digits=3),
    Column("audioset", "d_prime", "AS d'", digits=2),
    Column("msrvtt", "t2v_R@1", "MSR R@1"),
    Column("msrvtt", "t2v_R@5", "MSR R@5"),
    Column("msrvtt", "t2v_R@10", "MSR R@10"),
    Column("msrvtt", "t2v_MedR", "MSR MedR", lower_is_better=True),
    *(Column("noise", f"auroc/{name}/either", f"AUROC {name}", digits=3) for name in NOISE_INDICATORS),
)
# The headline metric of each task in the generated summary.
HEADLINE = {
    "kinetics": Column("kinetics", "top1", "Kinetics top-1"),
    "audioset": Column("audioset", "mAP", "AudioSet mAP", digits=3),
    "msrvtt": Column("msrvtt", "t2v_R@10", "MSR-VTT R@10"),
    "noise": Column("noise", "auroc/cos_parameters/either", "noise AUROC (parameter cosine)", digits=3),
}
DOWNSTREAM = ("kinetics", "audioset", "msrvtt")  # the transfer tasks (noise detection is not one)


def column_of(task: str, metric: str) -> Column:
    """The column of a task's metric: its headline or ablation column when it has one (label, digits,
    direction), else one labelled ``task metric`` (a MedR, by its name, lower is better)."""
    for col in (*HEADLINE.values(), *ABLATION_COLUMNS):
        if (col.task, col.metric) == (task, metric):
            return col
    return Column(task, metric, f"{task} {metric}", lower_is_better=metric.endswith("MedR"))

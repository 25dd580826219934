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
# MSR-VTT's concept-level retrieval (every test video of the query's concept relevant): named for the
# study page (its headroom tables, a primary endpoint in ``worlds.analysis``), not in the ablation
# table, whose columns stay those of every report written before these metrics existed.
CONCEPT_COLUMNS: tuple[Column, ...] = (
    Column("msrvtt", "t2v_concept_mAP", "MSR concept mAP", digits=3),
    Column("msrvtt", "t2v_concept_R@1", "MSR concept R@1"),
    Column("msrvtt", "t2v_concept_R@5", "MSR concept R@5"),
    Column("msrvtt", "t2v_concept_R@10", "MSR concept R@10"),
)
# The study page's headroom tables: each transfer task's headline, then the concept-level mAP (not
# R@10: with 20 relevant videos among 320, a random ranking already puts one in the top 10 about half
# the time); a tree evaluated before it existed has none and shows the headlines only.
HEADROOM_COLUMNS: tuple[Column, ...] = (*(HEADLINE[task] for task in DOWNSTREAM), CONCEPT_COLUMNS[0])


def column_of(task: str, metric: str) -> Column:
    """The column of a task's metric: its headline, ablation or concept column when it has one (label,
    digits, direction), else one labelled ``task metric`` (a MedR, by its name, lower is better)."""
    for col in (*HEADLINE.values(), *ABLATION_COLUMNS, *CONCEPT_COLUMNS):
        if (col.task, col.metric) == (task, metric):
            return col
    return Column(task, metric, f"{task} {metric}", lower_is_better=metric.endswith("MedR"))

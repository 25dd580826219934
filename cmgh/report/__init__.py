"""Tables, figures and a generated summary from a results folder.

Reads the evaluations' metrics (``eval/{task}/{backbone}/{variant}/seed{seed}/metrics.json``) and
the pre-training runs (train logs, per-sample score dumps), paths from :mod:`cmgh.layout`, and
writes:

* ``tables/metrics_long.csv`` (one row per task, backbone, variant, seed, metric) and
  ``tables/metrics_wide.csv`` (one row per run, one column per ``task/metric``);
* ``tables/ablation.{csv,md,tex}``: backbone x variant (incl. ``random``), mean +- std over seeds,
  best mean per column in bold (lowest for rank metrics);
* ``tables/summary.md``: one generated paragraph per backbone comparing every variant with the
  baseline and pre-training with random init, paired by seed, a difference called only when the
  seeds resolve it (:mod:`.stats`);
* ``tables/noise_over_training.{csv,md}`` and ``figures/noise_over_training_{backbone}_{variant}.{png,pdf}``:
  noise-detection AUROC and AP per indicator, target and step window over seeds, from every run's
  ``noise_training`` evaluation (:mod:`.detection_over_training`);
* ``figures/{conflict_cosine_hist,fractions,training_curves,noise_roc}.{png,pdf}``;
* ``figures/variants_per_task.{png,pdf}``: each task's headline metric per variant, mean and 95 %
  interval over seeds, the random-init floor marked (:mod:`.headline`);
* ``tables/*.html`` beside every ``tables/*.md`` (:mod:`.html`: Snakemake's report shows HTML, not Markdown);
* ``report/landing.{rst,md}``: the front page of `snakemake --report` and the MLflow experiment's
  description (:mod:`.landing`), set when the tree's own config tracks to an existing experiment;
* ``tables/scaling.{csv,md}`` and ``figures/scaling_gain.{png,pdf}`` when the variants include
  pairs that differ only by YouTube-8M in ``pretrain.corpora`` (:mod:`.scaling`).

Rows and comparisons follow the config's variants (:func:`collect.variant_order`): ``random``,
the baseline, then the config's order (the tree's resolved config, else a run's config).

Modules: :mod:`.collect` (reading), :mod:`.columns`, :mod:`.stats` (paired comparisons over seeds), :mod:`.tables`, :mod:`.summary`,
:mod:`.headline`, :mod:`.landing`, :mod:`.html`, :mod:`.figures`, :mod:`.detection_over_training`, :mod:`.scaling`, :mod:`.gain_vs_noise` and :mod:`.study_page` (across trees),
:mod:`.from_store` (the ablation table from the tracking store).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cmgh import layout
from cmgh.io import atomic_write_text
from cmgh.report import coverage, detection_over_training, landing
from cmgh.report.collect import collect, results_order, tree_config, wide
from cmgh.report.columns import ABLATION_COLUMNS, HEADLINE, Column
from cmgh.report.figures import figure_cosine_hist, figure_fractions, figure_noise_roc, figure_training_curves, figure_variants
from cmgh.report.gain_vs_noise import figure_noise_gain, gain_vs_noise
from cmgh.report.headline import headline
from cmgh.report.html import html_beside
from cmgh.report.study_page import build_noise_gain
from cmgh.report.scaling import build_scaling
from cmgh.report.summary import compare_variants, summary, verdict
from cmgh.report.tables import CAPTION, _best_rows, ablation, ablation_csv, ablation_latex, ablation_markdown, formatted, to_latex, to_markdown

__all__ = [
    "ABLATION_COLUMNS", "CAPTION", "HEADLINE", "Column", "_best_rows", "ablation", "ablation_csv",
    "ablation_latex", "ablation_markdown", "build_noise_gain",
    "build_report", "build_scaling", "collect", "compare_variants", "figure_noise_gain", "formatted", "gain_vs_noise",
    "summary", "to_latex", "to_markdown", "verdict", "wide",
]

log = logging.getLogger(__name__)


def build_report(results: str | Path, compare: Sequence[str | Path] = ()) -> dict[str, list[Path]]:
    """Write every table, figure and the summary under ``results``; returns the written paths by kind.

    ``compare``: results trees of the same grid at other noise rates, for the gain-vs-noise figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    results = Path(results)
    long = collect(results)
    order = results_order(results, long.variant.unique())
    figures = layout.figures_dir(results)
    written: dict[str, list[Path]] = {"tables": [], "figures": []}

    def text(path: Path, content: str) -> None:
        atomic_write_text(path, content)
        written["tables"].append(path)

    text(layout.table(results, layout.METRICS_LONG_TABLE, "csv"), long.to_csv(index=False))
    text(layout.table(results, layout.METRICS_WIDE_TABLE, "csv"), wide(long).to_csv(index=False))
    table = ablation(long, order=order)
    text(layout.table(results, layout.ABLATION_TABLE, "csv"), ablation_csv(table))
    text(layout.table(results, layout.ABLATION_TABLE, "md"), ablation_markdown(table))
    text(layout.table(results, layout.ABLATION_TABLE, "tex"), ablation_latex(table))
    text(layout.table(results, layout.SUMMARY_TABLE, "md"), summary(long, order) + coverage.section(coverage.gaps(long, tree_config(results))))
    for kind, paths in detection_over_training.build(results, order).items():
        written[kind] += paths
    figures.mkdir(parents=True, exist_ok=True)
    for make in (figure_cosine_hist, figure_fractions, figure_training_curves, figure_noise_roc):
        paths = make(results, figures, order)
        if not paths:
            log.info("%s: no input for %s", results, make.__name__)
        written["figures"] += paths
    cells = headline(long, order)
    written["figures"] += figure_variants(cells, figures)
    for kind, paths in build_scaling(results, long).items():
        written[kind] += paths
    if compare:
        written["figures"] += figure_noise_gain([results, *map(Path, compare)], figures)
    written["tables"] += html_beside([path for path in written["tables"] if path.suffix == ".md"])
    page = landing.build(results, long, cells, written)
    written["report"] = landing.write(results, page)
    why_not = landing.describe_experiment(results, page.markdown)
    log.info("%s: %s", results, "the MLflow experiment's description is the front page" if why_not is None else
             f"the MLflow experiment's description is left as is ({why_not})")
    return written

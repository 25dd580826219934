"""The report's front page: a title, what was run, the headline table (:mod:`.headline`) and where
the rest is, written as ``report/landing.rst`` and ``report/landing.md`` (:func:`cmgh.layout.landing`).

* The rst is the global ``report:`` page of `snakemake --report` (workflow/rules/report.smk): Snakemake
  renders it with Jinja, then docutils, and shows it beside the rule graph. The whole page is one
  Jinja ``raw`` block (nothing in the results can be read as a template); the table and the figure
  are ``.. raw:: html`` blocks; links to the report's items are rst references to the targets
  Snakemake appends (``summary.html_``, ``Figures_``).
* The Markdown is the same page for MLflow's experiment description (:func:`describe_experiment`).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cmgh import keypaths, layout
from cmgh.io import atomic_write_text
from cmgh.layout import BASELINE_VARIANT, RANDOM_VARIANT
from cmgh.report import stats
from cmgh.report.collect import tree_config
from cmgh.report.headline import Cell, panels

log = logging.getLogger(__name__)

COLUMNS = ("variant", f"mean [{100 * stats.LEVEL:g} % interval]", "seeds", f"− {BASELINE_VARIANT} [{100 * stats.LEVEL:g} % interval], p, n", "verdict")
# Inside Snakemake's report: the prose column (Tailwind `max-w-lg`, 32rem) widened for the table, and
# its screen-high flex box top-aligned so a page taller than the window scrolls from its title.
STYLE = """<style>
.max-w-lg:has(#cmgh-landing) { max-width: min(68rem, 72vw); }
.h-screen:has(#cmgh-landing) { align-items: flex-start; }
#cmgh-landing table { width: auto; border-collapse: collapse; font-size: 13px; line-height: 1.35; margin: .4rem 0 .8rem; font-variant-numeric: tabular-nums; }
#cmgh-landing th, #cmgh-landing td { padding: 3px 8px; border-bottom: 1px solid #e5e7eb; text-align: right; white-space: nowrap; vertical-align: top; }
#cmgh-landing thead th { font-weight: 600; border-bottom: 2px solid #9ca3af; }
#cmgh-landing tr.task th { text-align: left; background: #f3f4f6; padding-top: 6px; }
#cmgh-landing td:first-child, #cmgh-landing th:first-child, #cmgh-landing td:last-child, #cmgh-landing th:last-child { text-align: left; }
#cmgh-landing td:last-child { white-space: normal; min-width: 12rem; }
#cmgh-landing tr.floor td { color: #6b7280; font-style: italic; }
#cmgh-landing .better { color: #15803d; font-weight: 600; }
#cmgh-landing .worse { color: #b91c1c; font-weight: 600; }
.cmgh-figure img { max-width: 100%; }
</style>"""


@dataclass(frozen=True)
class Landing:
    title: str
    rst: str
    markdown: str


# --------------------------------------------------------------------------- what was run


def _variant_text(name: str, entry: Any, code: Callable[[str], str]) -> str:
    changes = keypaths.flatten(entry) if isinstance(entry, dict) and entry else {}
    if name == BASELINE_VARIANT and not changes:
        return f"{code(name)} (the config as is)"
    return f"{code(name)} ({', '.join(code(f'{k} = {v}') for k, v in changes.items()) or 'the config as is'})"


def _list(items: Sequence[str]) -> str:
    if len(items) < 2:
        return items[0] if items else "none"
    return ", ".join(items[:-1]) + " and " + items[-1]


def what_ran(long: pd.DataFrame, tree: dict[str, Any], cells: list[Cell], code: Callable[[str], str],
             label: Callable[[str], str] = str) -> str:
    """One paragraph from the tree's config and the metrics found: data and noise, backbones,
    variants (what each changes), steps, seeds, tasks. ``code`` marks a name as code, ``label`` escapes
    a metric's label (rst or Markdown)."""
    data = tree.get("data", {})
    source = data.get("source", "synth")
    parts = []
    if source == "synth":
        noise = data.get("noise", {})
        audio, text = float(noise.get("audio_rate", 0.0)), float(noise.get("text_rate", 0.0))
        injected = (f"{100 * audio:g} % of the pre-training triplets have their audio and {100 * text:g} % their text taken from "
                    "another clip" if audio or text else "no injected misalignment (a clean world)")
        parts.append(f"Generated data (in the real datasets' file formats): {injected}.")
    else:
        parts.append(f"Data: {code(str(source))} (the real datasets).")
    configured = tree.get("variants", {}) if isinstance(tree.get("variants"), dict) else {}
    found = [v for v in dict.fromkeys(c.variant for c in cells) if v != RANDOM_VARIANT]
    backbones = sorted(long.backbone.unique())
    pre = tree.get("pretrain", {})
    seeds = sorted(int(s) for s in long[long.variant != RANDOM_VARIANT].seed.unique())
    variants = [_variant_text(v, configured.get(v, {}), code) for v in found]
    steps = f"{pre['steps']} steps of batch {pre.get('batch_size', '?')}" if "steps" in pre else "its configured steps"
    parts.append(f"Pre-trained {'backbone' if len(backbones) == 1 else 'backbones'} {_list([code(b) for b in backbones])}, "
                 f"{len(variants)} {'variant' if len(variants) == 1 else 'variants'}: {_list(variants)}; "
                 f"{steps} each, {'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))}."
                 + (" A random-init encoder of each backbone, evaluated the same way, is the floor." if RANDOM_VARIANT in set(long.variant) else ""))
    tasks = list(dict.fromkeys(label(c.col.label) for c in cells))
    parts.append(f"Evaluated on {_list(tasks)} (each task's headline metric below; every metric in the ablation table).")
    return " ".join(parts)


LEGEND = (f"Each row: a variant's mean over seeds [its {100 * stats.LEVEL:g} % interval], then its difference with the "
          f"{BASELINE_VARIANT} paired by seed [{100 * stats.LEVEL:g} % interval], p, n and the verdict: better or worse only when "
          f"the interval excludes 0 and p < {1 - stats.LEVEL:.2g}, as in the summary. The best mean per task is in bold.")


# --------------------------------------------------------------------------- the table


def _verdict_class(verdict: str) -> str:
    return verdict if verdict in ("better", "worse") else ""


def _task_heading(cell: Cell, several_backbones: bool) -> str:
    arrow = "lower is better" if cell.col.lower_is_better else "higher is better"
    return f"{cell.backbone} · {cell.col.label} ({arrow})" if several_backbones else f"{cell.col.label} ({arrow})"


def table_html(cells: list[Cell]) -> str:
    """The headline table as an HTML fragment: one block per (backbone, task), a row per variant."""
    esc = html.escape
    several = len({c.backbone for c in cells}) > 1
    rows = ["<table>", "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr></thead>", "<tbody>"]
    for block in panels(cells).values():
        rows.append(f'<tr class="task"><th colspan="{len(COLUMNS)}">{esc(_task_heading(block[0], several))}</th></tr>')
        for c in block:
            mean = f"<strong>{esc(c.mean_text())}</strong>" if c.best else esc(c.mean_text())
            klass = ' class="floor"' if c.variant == RANDOM_VARIANT else ""
            verdict = f'<span class="{_verdict_class(c.verdict)}">{esc(c.verdict)}</span>' if _verdict_class(c.verdict) else esc(c.verdict)
            rows.append(f"<tr{klass}><td>{esc(c.variant)}</td><td>{mean}</td><td>{c.n}</td><td>{esc(c.difference_text())}</td><td>{verdict}</td></tr>")
    rows += ["</tbody>", "</table>"]
    return "\n".join(rows)


def table_markdown(cells: list[Cell]) -> str:
    several = len({c.backbone for c in cells}) > 1
    lines = ["| task | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for c in cells:
        mean = f"**{c.mean_text()}**" if c.best else c.mean_text()
        task = f"{c.backbone} · {c.col.label}" if several else c.col.label
        lines.append(f"| {task}{' ↓' if c.col.lower_is_better else ''} | {c.variant} | {mean} | {c.n} | {c.difference_text()} | {c.verdict} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the page


def _rst_code(text: str) -> str:
    return f"``{text}``"


def _rst_text(text: str) -> str:
    """A label as rst text: ``R@10`` is no e-mail address, ``*`` no emphasis."""
    for char in ("\\", "*", "`", "|", "@"):
        text = text.replace(char, "\\" + char)
    return text


def _md_code(text: str) -> str:
    return f"`{text}`"


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" if line.strip() else "" for line in text.splitlines())


def build(results: Path, long: pd.DataFrame, cells: list[Cell], written: dict[str, list[Path]]) -> Landing:
    """The front page of ``results`` from its metrics (``long``), their headline ``cells``
    (:func:`cmgh.report.headline.headline`) and the files the report wrote."""
    tree = tree_config(results)
    name = str(tree.get("name") or results.name)
    title = f"cmgh results: {name}"
    files = {p.name: p for paths in written.values() for p in paths}
    figure = files.get(f"{layout.VARIANTS_FIGURE}.png")
    # rst: references to the items Snakemake registers (workflow/rules/report.smk), only those written
    figure_refs = [f"`{n}`_" for n in (f"{layout.VARIANTS_FIGURE}.png", f"{layout.TRAINING_CURVES_FIGURE}.png") if n in files]
    table_refs = [f"`{n}`_" for n in (f"{t}.html" for t in (layout.SUMMARY_TABLE, layout.ABLATION_TABLE, layout.NOISE_TRAINING_TABLE,
                                                            layout.SCALING_TABLE)) if n in files]
    where = (f"Figures: {', '.join(figure_refs) or 'none'} (every figure under Figures_); tables, readable here: "
             f"{', '.join(table_refs) or 'none'} (all under Tables_; CSV, Markdown and LaTeX beside them in "
             f"``{layout.tables_dir(results)}``).")
    image = ""
    if figure is not None and figure.is_file():
        data = base64.encodebytes(figure.read_bytes()).decode("ascii")  # in lines: docutils refuses a line over 10 000 characters
        image = f'<div class="cmgh-figure"><img alt="{layout.VARIANTS_FIGURE}.png" src="data:image/png;base64,{data}"></div>'
    body = f'{STYLE}\n<div id="cmgh-landing">\n{table_html(cells)}\n</div>'
    rst = "\n".join([
        "{% raw %}",  # Snakemake renders the page with Jinja before docutils: nothing here is a template
        "=" * len(title), title, "=" * len(title), "",
        what_ran(long, tree, cells, _rst_code, _rst_text), "",
        ".. raw:: html", "", _indent(body), "",
        LEGEND, "",
        where, "",
        *([".. raw:: html", "", _indent(image), ""] if image else []),
        "{% endraw %}", "",
    ])
    report_html = Path(results) / layout.REPORT_HTML
    markdown = "\n".join([
        f"# {title}", "",
        what_ran(long, tree, cells, _md_code), "",
        table_markdown(cells), "",
        LEGEND, "",
        f"The report: `{report_html}` (`make reproduce` writes it: this table, a figure per task, training curves, every table); "
        f"every comparison: `{layout.table(results, layout.SUMMARY_TABLE, 'md')}`; figures in `{layout.figures_dir(results)}`. "
        "`cmgh browse` prints where everything is.", "",
    ])
    return Landing(title, rst, markdown)


def write(results: Path, landing: Landing) -> list[Path]:
    """``report/landing.rst`` and ``report/landing.md``."""
    return [atomic_write_text(layout.landing(results, "rst"), landing.rst), atomic_write_text(layout.landing(results, "md"), landing.markdown)]


# --------------------------------------------------------------------------- MLflow


def describe_experiment(results: Path, markdown: str) -> str | None:
    """Set the description of the tracked experiment of ``results`` (the experiment of the tree's own
    config, when that config's results folder is this tree) to ``markdown``; returns why not, or None
    when set. Never raises: the report stands without it."""
    from cmgh import config as config_mod
    from cmgh.errors import CmghError

    tree = tree_config(results)
    if not tree:
        return f"{results}: no config to find its tracked experiment by"
    try:
        cfg = config_mod.from_dict(tree)
        if cfg.path("results").resolve() != Path(results).resolve():
            return f"the tree's config writes to {cfg.path('results')}, not {results}: another tree's experiment"
        from cmgh.track.description import describe

        return describe(cfg, markdown)
    except CmghError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a tracking store that fails never fails the report
        log.warning("%s: the MLflow experiment's description was not set (%s: %s)", results, exc.__class__.__name__, str(exc)[:200])
        return f"{exc.__class__.__name__}: {str(exc)[:200]}"

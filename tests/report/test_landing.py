"""The report's front page, its per-task figure and the HTML renderings of its tables, from the fake
results tree behind the golden summary: the headline table's numbers are the summary's and the
ablation table's, the rst renders as `snakemake --report` renders it (Jinja, then docutils) without
a problem, and the figure draws the same numbers."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from cmgh import layout
from cmgh.report import build_report, collect
from cmgh.report.collect import results_order
from cmgh.report.columns import ABLATION_COLUMNS, HEADLINE
from cmgh.report.figures import draw_variants
from cmgh.report.headline import headline
from tests.report.fake_results import DEFAULT_VARIANTS, fake_results

LABELS = {col.label: col for col in HEADLINE.values()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = fake_results(tmp_path_factory.mktemp("landing"))
    return root, build_report(root)


def landing_rows(markdown: str) -> list[list[str]]:
    """The headline table of landing.md: task, variant, mean [interval], seeds, difference, verdict."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| task |")]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]


def number(text: str) -> float:
    return float(text.strip("*").split(" [")[0].replace("\u2212", "-"))


class Cells(HTMLParser):
    """The text of every table row of an HTML page (``th`` and ``td`` cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(html)
    return parser.rows


def render_as_snakemake(rst: str, targets: list[str]) -> str:
    """What `snakemake --report` does with the global ``report:`` page (snakemake/report/__init__.py):
    append a link target per report item and category, render with Jinja, then docutils to HTML."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    links = "\n\n" + "\n".join(f".. _{name}: javascript:app.showResultInfo('{name}')" for name in targets) + "\n"
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(rst + links).render(snakemake=None, categories={}, files=[])
    return publish_parts(text, writer="html")["html_body"]


def test_the_headline_table_is_the_summary_and_the_ablation(tree: tuple[Path, dict[str, list[Path]]]) -> None:
    root, written = tree
    assert layout.landing(root, "md") in written["report"] and layout.landing(root, "rst") in written["report"]
    rows = landing_rows(layout.landing(root, "md").read_text())
    assert [r[1] for r in rows if r[0] == "Kinetics top-1"] == ["random", *DEFAULT_VARIANTS]
    assert [r[1] for r in rows if r[0].startswith("noise")] == list(DEFAULT_VARIANTS)  # random init has no noise evaluation
    summary = (layout.tables_dir(root) / "summary.md").read_text()
    ablation = pd.read_csv(layout.table(root, layout.ABLATION_TABLE, "csv")).set_index("variant")
    long = pd.read_csv(layout.table(root, layout.METRICS_LONG_TABLE, "csv"))
    compared = 0
    for task, variant, mean, seeds, difference, verdict in rows:
        col = LABELS[task]
        short = next(c for c in ABLATION_COLUMNS if (c.task, c.metric) == (col.task, col.metric)).label
        rounding = 0.51 * 10 ** -col.digits  # the page prints col.digits decimals
        assert number(mean) == pytest.approx(ablation.loc[variant, f"{short} mean"], abs=rounding), (task, variant)
        assert int(seeds) == ablation.loc[variant, f"{short} n"]
        values = long[(long.task == col.task) & (long.metric == col.metric) & (long.variant == variant)]["value"]
        if int(seeds) == 3:  # the bootstrap interval of the mean never leaves the seeds' range
            low, high = (number(x) for x in mean.strip("*").split(" [")[1].rstrip("]").split(", "))
            assert values.min() - rounding <= low <= number(mean) <= high <= values.max() + rounding, (task, variant, mean)
        if variant in ("random", "baseline"):
            assert (difference, verdict) == (("random-init floor" if variant == "random" else "reference"), "")
            continue
        claims = summary.split(f"**{variant}** vs baseline: ")[1].split(". **")[0]
        assert f"{task} {difference}, {verdict}" in claims, (task, variant)
        compared += 1
    assert compared == 3 * 4
    bold = {r[0]: r[1] for r in rows if r[2].startswith("**")}
    assert bold["MSR-VTT R@10"] == "gcl"  # the best mean, even from its single seed


def test_the_front_page_renders_as_snakemake_renders_it(tree: tuple[Path, dict[str, list[Path]]]) -> None:
    root, written = tree
    rst = layout.landing(root, "rst").read_text()
    targets = ["Figures", "Tables", *(p.name for paths in written.values() for p in paths)]
    page = render_as_snakemake(rst, targets)
    assert '<h1 class="title">cmgh results: mini</h1>' in page
    assert "MSR-VTT R@10" in page and "mailto:" not in page  # a label, not an e-mail address
    assert "System Message" not in page and "problematic" not in page, page[:3000]
    assert "javascript:app.showResultInfo('summary.html')" in page and "javascript:app.showResultInfo('variants_per_task.png')" in page
    src = page.split('<img alt="variants_per_task.png" src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode("".join(src.split())) == layout.figure(root, layout.VARIANTS_FIGURE).read_bytes()  # as a browser reads it
    md = landing_rows(layout.landing(root, "md").read_text())
    html = [row for row in table_rows(page.split('<div id="cmgh-landing">')[1].split("</table>")[0]) if len(row) == 5]
    assert html[1:] == [[cell.replace("**", "") for cell in row[1:]] for row in md]
    assert "problematic" in render_as_snakemake(rst, ["Figures", "Tables"])  # what a reference to an unregistered item shows


def test_the_figure_draws_the_headline_numbers(tree: tuple[Path, dict[str, list[Path]]]) -> None:
    from matplotlib.collections import PathCollection

    root, written = tree
    assert layout.figure(root, layout.VARIANTS_FIGURE) in written["figures"]
    assert layout.figure(root, layout.VARIANTS_FIGURE).stat().st_size > 20_000
    long = collect(root)
    fig = draw_variants(headline(long, results_order(root, long.variant.unique())))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [col.label for col in HEADLINE.values()]
    for ax, col in zip(axes, HEADLINE.values(), strict=True):
        mean = long[(long.task == col.task) & (long.metric == col.metric)].groupby("variant")["value"].mean()
        floors = [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"]
        assert floors == ([] if col.task == "noise" else [pytest.approx(mean["random"])])
        points = [coll for coll in ax.collections if isinstance(coll, PathCollection)]  # scatter: the seeds beside, the means at x = 0, 1, ...
        means = sorted((float(x), float(y)) for coll in points for x, y in coll.get_offsets() if float(x).is_integer())
        assert [label.get_text() for label in ax.get_xticklabels()] == list(DEFAULT_VARIANTS)
        assert means == [(float(i), pytest.approx(mean[v])) for i, v in enumerate(DEFAULT_VARIANTS)]
    assert draw_variants([]) is None


def test_every_markdown_table_has_an_html_page(tree: tuple[Path, dict[str, list[Path]]]) -> None:
    root, written = tree
    markdown = sorted(layout.tables_dir(root).glob("*.md"))
    assert {p.stem for p in markdown} == {"ablation", "summary", "noise_over_training"}
    for md in markdown:
        html = md.with_suffix(".html")
        assert html in written["tables"]
        text = html.read_text()
        assert text.startswith("<!DOCTYPE html>") and "<script" not in text
        body_rows = [line for line in md.read_text().splitlines() if line.startswith("|") and not line.startswith("|---")]
        assert len(table_rows(text)) == len(body_rows), md.name
    ablation = (layout.tables_dir(root) / "ablation.html").read_text()
    assert "<strong>" in ablation and "**" not in ablation
    assert ["ms", "gr_gcl"] == table_rows(ablation)[-1][:2]
    summary = (layout.tables_dir(root) / "summary.html").read_text()
    assert "<h2>Backbone <code>ms</code></h2>" in summary and "<strong>gr</strong> vs baseline" in summary

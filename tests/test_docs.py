"""The README and the pages under docs/: every relative link reaches a file (and its heading), and the
README stays short enough to read in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _links(text: str) -> list[str]:
    """Link targets of a Markdown page, code blocks and inline code left out."""
    prose = re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))
    return _LINK.findall(prose)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_a_file(page: Path) -> None:
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"


def _table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the Markdown tables of a page, keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_readme_benchmark_figures_match_the_benchmarks_page() -> None:
    """The README's headline benchmark rows repeat docs/benchmarks.md's figures and targets exactly."""
    full = _table_rows((REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    headline = {what: row for what, row in _table_rows(readme).items() if "benchmarks/" in " ".join(row)}
    assert headline, "the README lists no benchmark"
    for what, (_, _, figure, target) in headline.items():
        assert what in full, f"README benchmark {what!r} is not in docs/benchmarks.md"
        assert full[what][2:] == [figure, target], f"{what!r}: README says {figure!r}, docs/benchmarks.md {full[what][2]!r}"


def test_readme_study_section_is_the_study_pages_conclusions() -> None:
    import runpy

    publish = runpy.run_path(str(REPO / "workflow" / "scripts" / "publish_study.py"), run_name="docs")
    readme = (REPO / "README.md").read_text()
    page = (REPO / "docs" / "study" / "README.md").read_text()
    assert publish["render_readme"](readme, page) == readme, "regenerate it: python workflow/scripts/publish_study.py --readme-only"
    lines = publish["section"](page, "Conclusions").splitlines()
    assert next(line for line in lines if not line.startswith(publish["EXPLORATORY"])) in readme

"""Publish a finished study run into the documentation: copy its results page (with its gain table and
figures) to docs/study/, and regenerate the README's study section from the page's conclusions, so the
README never says more, or other, than the page the run wrote.

Usage: python workflow/scripts/publish_study.py [results/study]   (after `make study`)
       python workflow/scripts/publish_study.py --readme-only      (re-render README from docs/study/)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cmgh.io import atomic_write, atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "study"
README = REPO / "README.md"
BEGIN = "<!-- study:begin (generated from docs/study/README.md by workflow/scripts/publish_study.py; do not edit) -->"
END = "<!-- study:end -->"
COPIED = ("README.md", "tables/noise_gain.csv", "figures/noise_gain.png", "figures/noise_detection.png", "figures/quality_curve.png")


def section(page: str, title: str) -> str:
    """The body of the page's ``## title`` section (up to the next ``## ``)."""
    marker = f"\n## {title}\n"
    if marker not in page:
        raise SystemExit(f"publish_study: the study page has no '## {title}' section (expected the page `cmgh report --noise-gain` writes)")
    return page.split(marker, 1)[1].split("\n## ", 1)[0].strip()


EXPLORATORY = "- Exploratory: "  # the page's conclusions outside the pre-declared primary family


def readme_block(page: str) -> str:
    """The README's study section: the page's conclusions, verbatim, under the page's own link (the
    exploratory ones counted, not copied: they are the page's, with their tables)."""
    lines = section(page, "Conclusions").splitlines()
    kept = [line for line in lines if not line.startswith(EXPLORATORY)]
    exploratory = len(lines) - len(kept)
    return "\n".join([
        BEGIN,
        "What the last `make study` run concluded, copied from its results page "
        "[docs/study/README.md](docs/study/README.md) (design and caveats: [docs/study.md](docs/study.md)); "
        "the numbers depend on the machine:",
        "",
        *kept,
        *([f"- Exploratory (every task and world, outside the primary family): {exploratory} more conclusions on the page."] if exploratory else []),
        END,
    ])  # fmt: skip


def render_readme(readme: str, page: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"publish_study: {README} has no study markers (expected a line {BEGIN!r} and a line {END!r})")
    head, rest = readme.split(BEGIN, 1)
    return head + readme_block(page) + rest.split(END, 1)[1]


def copy_run(root: Path) -> None:
    for name in COPIED:
        source = root / name
        if not source.is_file():
            raise SystemExit(f"publish_study: {source} is missing (expected a finished `make study` under {root})")
        target = DOCS / Path(name).name if name.startswith("tables/") else DOCS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda fh, source=source: fh.write(source.read_bytes()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=REPO / "results" / "study", help="the study's worlds.root")
    parser.add_argument("--readme-only", action="store_true", help="only re-render README.md from docs/study/README.md")
    args = parser.parse_args(argv)
    if not args.readme_only:
        copy_run(args.root)
    atomic_write_text(README, render_readme(README.read_text(), (DOCS / "README.md").read_text()))


if __name__ == "__main__":
    sys.exit(main())

"""HTML renderings of the report's Markdown tables, written beside them.

Snakemake's HTML report shows images, PDFs and text/html (in the page); a Markdown file it only
offers as a download. So each ``tables/*.md`` gets a standalone ``tables/*.html`` (Markdown
rendered by markdown-it, CommonMark plus its tables; inline CSS, no script, nothing fetched).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from cmgh.io import atomic_write_text

# Readable tables at any width: numbers right-aligned, a header that stays put, rows striped.
STYLE = """
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 1.2rem; max-width: 110rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; } h3 { font-size: 1rem; }
p { max-width: 60rem; }
code { background: #f2f3f5; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
td:first-child, th:first-child, td:nth-child(2), th:nth-child(2) { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
"""


def page(title: str, body: str, style: str = STYLE) -> str:
    """A standalone HTML document (UTF-8, inline style) around ``body``."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{style}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def render_markdown(text: str) -> str:
    """Markdown (CommonMark + tables) as an HTML fragment; raw HTML in the text is escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def markdown_page(text: str, title: str) -> str:
    return page(title, render_markdown(text))


def html_beside(markdown_files: Iterable[Path]) -> list[Path]:
    """``x.html`` beside every ``x.md`` (titled by the file's name); the paths written."""
    written = []
    for path in markdown_files:
        if path.suffix != ".md":
            continue
        target = path.with_suffix(".html")
        atomic_write_text(target, markdown_page(path.read_text(encoding="utf-8"), f"{path.stem} ({path.name})"))
        written.append(target)
    return written

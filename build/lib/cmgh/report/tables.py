"""The ablation table (backbone x variant, mean ± std over seeds) and its Markdown/LaTeX renderings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmgh.report.collect import order_key, variant_order
from cmgh.report.columns import ABLATION_COLUMNS, Column


def ablation(long: pd.DataFrame, columns: Sequence[Column] = ABLATION_COLUMNS, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Mean, std and seed count per (backbone, variant) and column: columns ``<label> mean``, ``<label> std``, ``<label> n``.

    Rows follow ``order`` (see :func:`cmgh.report.collect.variant_order`; default: random,
    baseline, then alphabetical). A column no evaluation reported (an indicator newer than the
    results) is left out rather than shown empty."""
    runs = long[["backbone", "variant"]].drop_duplicates()
    key = order_key(order if order is not None else variant_order(runs["variant"]))
    keys = sorted(map(tuple, runs.to_numpy()), key=lambda bv: (bv[0], key(bv[1])))
    out = pd.DataFrame(keys, columns=["backbone", "variant"])
    for col in columns:
        sel = long[(long.task == col.task) & (long.metric == col.metric)]
        if sel.empty:
            continue
        stats = sel.groupby(["backbone", "variant"])["value"].agg(["mean", "std", "count"])
        merged = out.merge(stats, left_on=["backbone", "variant"], right_index=True, how="left")
        out[f"{col.label} mean"] = merged["mean"].to_numpy()
        out[f"{col.label} std"] = merged["std"].to_numpy()
        out[f"{col.label} n"] = merged["count"].fillna(0).astype(int).to_numpy()
    return out


def cell(mean: float, std: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _best_rows(table: pd.DataFrame, col: Column) -> set[int]:
    values = table[f"{col.label} mean"].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return set()
    best = np.nanmin(values) if col.lower_is_better else np.nanmax(values)
    return {i for i, v in enumerate(values) if np.isfinite(v) and np.isclose(v, best, rtol=0, atol=1e-12)}


def formatted(table: pd.DataFrame, columns: Sequence[Column], bold: tuple[str, str]) -> pd.DataFrame:
    """``mean ± std`` cells, the best mean of each column wrapped in ``bold``."""
    present = [c for c in columns if f"{c.label} mean" in table]
    out = table[["backbone", "variant"]].copy()
    for col in present:
        best = _best_rows(table, col)
        cells = []
        for i, (m, s) in enumerate(zip(table[f"{col.label} mean"], table[f"{col.label} std"], strict=True)):
            text = cell(float(m), float(s), col.digits)
            cells.append(f"{bold[0]}{text}{bold[1]}" if i in best else text)
        out[col.label + (" ↓" if col.lower_is_better else "")] = cells
    return out


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


CAPTION = "Ablation: mean ± std over seeds; best per column in bold (↓: lower is better)."


def ablation_csv(table: pd.DataFrame) -> str:
    """``tables/ablation.csv``: the numbers of :func:`ablation` (what ``cmgh runs --out x.csv`` writes too)."""
    return table.to_csv(index=False, float_format="%.6g")


def ablation_markdown(table: pd.DataFrame) -> str:
    """``tables/ablation.md``: caption, then ``mean ± std`` cells with the best in bold."""
    return f"{CAPTION}\n\n" + to_markdown(formatted(table, ABLATION_COLUMNS, ("**", "**")))


def ablation_latex(table: pd.DataFrame) -> str:
    return to_latex(formatted(table, ABLATION_COLUMNS, ("<<", ">>")), CAPTION.replace("↓", "lower"))


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A booktabs table; cells wrapped in ``<<…>>`` (see :func:`formatted`) are set in bold."""
    cols = list(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex_escape(caption)}}}",
        r"\begin{tabular}{" + "ll" + "r" * (len(cols) - 2) + "}",
        r"\toprule",
        " & ".join(_tex_escape(c).replace("↓", r"$\downarrow$") for c in cols) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        cells = []
        for value in row:
            text = str(value)
            bold = text.startswith("<<") and text.endswith(">>")
            text = _tex_escape(text.strip("<>")).replace("±", r"$\pm$")
            cells.append(rf"\textbf{{{text}}}" if bold else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"

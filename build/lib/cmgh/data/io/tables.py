"""Validated reading (CSV, JSON, Parquet tables, ``.npy`` arrays) and deterministic writing, shared by every dataset format.

Errors name the file, the 1-based line (header and comment lines included) or JSON field, the
value and what was expected, so a bad row in a million-line annotation file is found at once; a
damaged feature file (index table, shard array) is one line naming it and how to remake it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmgh.errors import DataError
from cmgh.io import atomic_write_text
from cmgh.layout import PathLike

Parser = Callable[[Path, int | str, str, Any], Any]
LINE = "line"  # the column of 1-based line numbers that ``parse_csv(..., lines=True)`` adds
REMAKE = "run `cmgh data extract` for this dataset again"


def bad(path: Path, line: int | str, field: str, value: Any, expected: str) -> DataError:
    where = f"line {line}" if isinstance(line, int) else str(line)
    return DataError(f"{path}: {where}: field '{field}': {value!r} is not {expected}")


def read_text(path: PathLike, what: str) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (expected the {what})")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start}: not UTF-8 text (expected the {what})") from None


def csv_rows(path: Path, text: str, skipinitialspace: bool = False) -> Iterable[tuple[int, list[str]]]:
    """``(line_number, fields)`` of every non-blank, non-comment CSV row (line numbers are 1-based)."""
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=skipinitialspace, strict=True)
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if fields[0].lstrip().startswith("#"):
                continue
            yield reader.line_num, fields
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num + 1}: not valid CSV ({exc})") from None


def as_int(path: Path, line: int | str, field: str, value: Any) -> int:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise bad(path, line, field, value, "an integer") from None
    if not math.isfinite(number) or number != int(number):
        raise bad(path, line, field, value, "an integer")
    return int(number)


def as_float(path: Path, line: int | str, field: str, value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise bad(path, line, field, value, "a number") from None
    if not math.isfinite(number):
        raise bad(path, line, field, value, "a finite number")
    return number


def as_flag(path: Path, line: int | str, field: str, value: Any) -> int:
    text = str(value).strip()
    if text not in ("0", "1"):
        raise bad(path, line, field, value, "0 or 1")
    return int(text)


def keep(path: Path, line: int | str, field: str, value: Any) -> str:
    return str(value)


def as_text(path: Path, line: int | str, field: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise bad(path, line, field, value, "a non-empty string")
    return text


def parse_csv(
    path: Path,
    text: str,
    columns: Sequence[str],
    parsers: Mapping[str, Parser],
    *,
    header: bool = True,
    skipinitialspace: bool = False,
    optional_index: bool = False,
    lines: bool = False,
) -> pd.DataFrame:
    """Parse a CSV whose header (or, without one, whose rows) has exactly ``columns``.

    ``optional_index`` tolerates the unnamed leading index column pandas writes by default (some
    public copies of the MSR-VTT test CSV have one). ``lines`` adds column :data:`LINE`, each
    row's 1-based line number, for messages about a row found bad later (an unsafe id).
    """
    rows = iter(csv_rows(path, text, skipinitialspace))
    drop_first = False
    if header:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}: line 1: empty file (expected header {','.join(columns)})")
        line, names = first
        names = [n.strip() for n in names]
        if optional_index and len(names) == len(columns) + 1 and names[0] in ("", "Unnamed: 0"):
            names, drop_first = names[1:], True
        if names != list(columns):
            raise DataError(f"{path}: line {line}: header {','.join(names)!r} is not {','.join(columns)!r}")
    records: dict[str, list[Any]] = {c: [] for c in columns}
    numbers: list[int] = []
    for line, fields in rows:
        if drop_first:
            fields = fields[1:]
        if len(fields) != len(columns):
            raise DataError(f"{path}: line {line}: {len(fields)} fields, expected {len(columns)} ({', '.join(columns)})")
        for name, value in zip(columns, fields, strict=True):
            records[name].append(parsers.get(name, as_text)(path, line, name, value))
        numbers.append(line)
    table = pd.DataFrame(records, columns=list(columns))
    if lines:
        table[LINE] = pd.Series(numbers, dtype="int64")
    return table


def write_csv(path: PathLike, header: Sequence[str] | None, rows: Iterable[Sequence[Any]], prelude: str = "") -> Path:
    buffer = io.StringIO()
    buffer.write(prelude)
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def load_json(path: PathLike, what: str) -> tuple[Path, Any]:
    path, text = read_text(path, what)
    try:
        return path, json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None


def field_of(row: Any, name: str) -> Any:
    """A column of a row given as a mapping, a pandas Series or a namedtuple (itertuples)."""
    if isinstance(row, Mapping | pd.Series):
        return row[name]
    return getattr(row, name)


def seconds(value: float) -> str:
    """Times as HowTo100M/MSR-VTT write them: shortest repr, deterministic."""
    return repr(float(value))


def read_parquet(path: PathLike, what: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A feature table (an ``index.parquet``, a tokenized text table); a missing or unreadable
    file is one DataError naming it instead of pyarrow's traceback."""
    import pyarrow

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found ({REMAKE})")
    try:
        return pd.read_parquet(path, columns=list(columns) if columns is not None else None)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        reason = " ".join(re.sub(r"^Could not open Parquet input source '.*?':", "", str(exc)).split())[:160]
        raise DataError(f"{path}: not a readable Parquet table ({reason}); expected the {what} ({REMAKE})") from None


def load_array(path: PathLike, what: str, mmap: bool = True) -> np.ndarray:
    """A ``.npy`` array (memory-mapped by default: only its header is read, whatever its size); a
    missing, truncated or foreign file is one DataError naming it."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (expected the {what}; {REMAKE})") from None
    except (OSError, ValueError, EOFError) as exc:
        truncated = any(sign in str(exc) for sign in ("length is greater", "EOF", "cannot reshape"))
        reason = "truncated" if truncated else "not a .npy array"
        raise DataError(f"{path}: {reason} (expected the {what}; {REMAKE})") from None

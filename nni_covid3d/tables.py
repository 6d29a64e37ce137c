"""The one table renderer: Markdown and CSV of row dicts, for ``compare``, ``report`` and ``benchmark``.

A table is a list of row dicts and its columns as ``(key, title)`` pairs. Cells follow one rule set
(:func:`cell`): missing values print as ``–``, ``params`` in millions, GFLOPs and AUC with three
decimals, other floats with two; rows whose ``source`` starts with ``reported`` (the papers' figures)
print in italics.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["Columns", "cell", "markdown_table", "csv_table", "write_tables"]

#: ``(key, title)`` pairs, in display order.
Columns = Sequence[tuple[str, str]]


def cell(key: str, value: Any) -> str:
    """One Markdown cell."""
    if value is None:
        return "–"
    if key == "params" and isinstance(value, (int, float)):
        return f"{value / 1e6:.2f}M"
    if key in ("gflops", "auc") and isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _is_reported(row: Mapping[str, Any]) -> bool:
    return str(row.get("source", "")).startswith("reported")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Columns) -> str:
    """``rows`` as a Markdown table (the papers' reported rows in italics)."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [cell(key, row.get(key)) for key, _ in columns]
        if _is_reported(row):
            cells = [f"*{c}*" if c != "–" else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Mapping[str, Any]], columns: Columns) -> str:
    """``rows`` as CSV with the column keys as header (missing values empty, numbers unrounded)."""
    keys = [key for key, _ in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in keys})
    return buffer.getvalue()


def write_tables(rows: Sequence[Mapping[str, Any]], columns: Columns, out_dir: str | Path, stem: str, *,
                 note: str = "") -> tuple[Path, Path]:
    """Write ``<stem>.md`` (``note`` first) and ``<stem>.csv`` in ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown, table_csv = out / f"{stem}.md", out / f"{stem}.csv"
    markdown.write_text(note + markdown_table(rows, columns))
    table_csv.write_text(csv_table(rows, columns))
    return markdown, table_csv

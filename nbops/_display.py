"""Small helpers shared by result objects: sizes, durations, HTML tables."""

from __future__ import annotations

import html
from typing import Any


def human_size(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def esc(value: Any) -> str:
    return html.escape(str(value))


def frame_html(df: Any, *, max_rows: int = 60) -> str:
    """A compact HTML table of a DataFrame (pandas is already imported by the caller)."""
    return df.to_html(index=False, max_rows=max_rows, border=0, classes="nbops-table", na_rep="")


def card(title: str, facts: dict[str, Any], table_html: str = "") -> str:
    items = "".join(f"<span style='margin-right:1.5em'><b>{esc(k)}</b> {esc(v)}</span>" for k, v in facts.items())
    return (f"<div class='nbops-result'><div style='font-weight:600'>{esc(title)}</div>"
            f"<div style='margin:.3em 0'>{items}</div>{table_html}</div>")

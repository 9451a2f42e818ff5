"""One progress display for every long operation: a widget bar in JupyterLab, text in batch runs.

``NBOPS_PROGRESS`` (or ``%config NbopsMagics.progress``) chooses: ``widget``, ``text``, ``none`` or
``auto`` (widget inside a kernel with ipywidgets, text elsewhere). ``nbops run`` and the tests set
``text``: tqdm's widget bar, picked by ``tqdm.auto`` under papermill, freezes at 0% in the saved
notebook.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def mode(requested: str | None = None) -> str:
    choice = (requested or os.environ.get("NBOPS_PROGRESS") or "auto").lower()
    if choice in ("widget", "text", "none"):
        return choice
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "text"
        return "widget"
    return "text"


class Progress:
    """A bar with a description and a postfix line. Use as a context manager."""

    def __init__(self, desc: str, total: float | None = None, *, unit: str = "it", requested: str | None = None,
                 unit_scale: bool = False) -> None:
        self.mode = mode(requested)
        self.desc = desc
        self._bar: Any = None
        if self.mode == "none":
            return
        if self.mode == "widget":
            from tqdm.notebook import tqdm as bar_cls
            kwargs: dict[str, Any] = {}
        else:
            from tqdm.std import tqdm as bar_cls
            kwargs = {"file": sys.stdout, "ascii": True, "mininterval": 0.5, "ncols": 100}
        self._bar = bar_cls(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=True, **kwargs)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_total(self, total: float) -> None:
        if self._bar is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: float = 1, *, note: str | None = None) -> None:
        if self._bar is None:
            return
        if note is not None:
            self._bar.set_postfix_str(note[:60], refresh=False)
        self._bar.update(n)

    def moveto(self, value: float, *, note: str | None = None) -> None:
        if self._bar is None:
            return
        self.update(value - self._bar.n, note=note)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

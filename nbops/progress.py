"""One progress display for every long operation: a widget bar in JupyterLab, text in batch runs.

:class:`Progress` is one bar (a build's steps); :class:`LayerProgress` is one row per layer (a push or
a pull): in widget mode an ipywidgets ``VBox`` of ``IntProgress`` + ``Label`` rows, in text mode one
line each time a layer changes state (``<layer> pushed 2.1 MB in 0.4 s``, ``<layer> already exists``),
which reads well in a papermill-saved notebook.

``NBOPS_PROGRESS`` (or ``%config NbopsMagics.progress``) chooses: ``widget``, ``text``, ``none`` or
``auto`` (widget when the cell came from a notebook frontend that draws widgets, text under
nbclient/papermill and outside a kernel). ``nbops run`` and the tests also set
``text``: tqdm's widget bar, picked by ``tqdm.auto`` under papermill, freezes at 0% in the saved
notebook.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ._display import human_size, human_time


def mode(requested: str | None = None) -> str:
    choice = (requested or os.environ.get("NBOPS_PROGRESS") or "auto").lower()
    if choice in ("widget", "text", "none"):
        return choice
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency
        shell = None
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    if kernel is not None:
        if not _frontend_draws_widgets(kernel):
            return "text"
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "text"
        return "widget"
    return "text"


def _frontend_draws_widgets(kernel: Any) -> bool:
    """Whether the cell being run came from a notebook frontend (JupyterLab, Notebook 7), which sends the
    cell's id with each execute request; nbclient — under papermill and ``nbops run`` — sends none, and
    a widget there is saved as a frozen bar nobody sees move."""
    try:
        parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else kernel._parent_header
    except Exception:
        return True
    meta = (parent or {}).get("metadata") or {}
    return "cellId" in meta


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


# Final states and how a text line words them; any other state is "active" (bytes moving).
FINAL_STATES = {"pushed": "pushed", "pulled": "pulled", "exists": "already exists", "mounted": "mounted",
                "failed": "failed"}
_QUIET_STATES = {"waiting"}  # not worth a line of their own


class _Row:
    __slots__ = ("layer", "state", "current", "total", "t_start", "duration_s", "widgets", "_shown")

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.state = "waiting"
        self.current = 0
        self.total: int | None = None
        self.t_start: float | None = None
        self.duration_s = 0.0
        self.widgets: Any = None
        self._shown = -1


class LayerProgress:
    """One row per layer: ``state()`` while bytes move, ``finish()`` once a layer is done.

    ``mode`` as for :func:`mode`. Text mode writes to ``out`` (default: ``sys.stdout`` at the time of
    writing, so papermill and pytest capture it). Widget mode imports ipywidgets only when first shown.
    Use as a context manager.
    """

    def __init__(self, title: str, *, requested: str | None = None, out: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode(requested)
        self.title = title
        self.rows: dict[str, _Row] = {}
        self.lines: list[str] = []  # every text line written, for tests and logs
        self._out = out
        self._clock = clock
        self._box: Any = None
        if self.mode == "text":
            self._say(title)

    def __enter__(self) -> LayerProgress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)

    # -- what callers report ------------------------------------------------------------------
    def state(self, layer: str, state: str, *, current: int | None = None, total: int | None = None) -> None:
        """``layer`` is in ``state`` (e.g. ``pushing``), ``current`` of ``total`` bytes moved."""
        row = self._row(layer)
        if total:
            row.total = int(total)
        if current is not None:
            row.current = int(current)
        changed = state != row.state
        if changed:
            row.state = state
            if state not in _QUIET_STATES and row.t_start is None:
                row.t_start = self._clock()
            if self.mode == "text" and state not in _QUIET_STATES:
                size = f" {human_size(row.total)}" if row.total else ""
                self._say(f"{layer} {state}{size}")
        if self.mode == "widget":
            self._draw(row, force=changed)

    def finish(self, layer: str, state: str, *, nbytes: int | None = None, duration_s: float | None = None,
               note: str | None = None) -> float:
        """``layer`` reached its final ``state`` (see :data:`FINAL_STATES`); returns its duration."""
        row = self._row(layer)
        if row.state in FINAL_STATES:  # a repeated final chunk: already reported
            return row.duration_s
        if nbytes is not None:
            row.total = int(nbytes)
        if duration_s is None:
            duration_s = self._clock() - row.t_start if row.t_start is not None else 0.0
        row.state, row.duration_s = state, duration_s
        row.current = row.total or 0
        word = FINAL_STATES.get(state, state)
        if state in ("pushed", "pulled"):
            text = f"{word} {human_size(row.total)} in {human_time(duration_s)}"
        else:
            text = word
        if note:
            text += f" {note}"
        if self.mode == "text":
            self._say(f"{layer} {text}")
        elif self.mode == "widget":
            self._draw(row, force=True, label=text)
        return duration_s

    def close(self, *, failed: bool = False, summary: str | None = None) -> None:
        """End the display; with ``failed`` the unfinished rows are marked failed."""
        if failed:
            for row in self.rows.values():
                if row.state not in FINAL_STATES:
                    self.finish(row.layer, "failed", duration_s=0.0)
        if summary and self.mode == "text":
            self._say(f"{self.title}: {summary}")
        elif summary and self.mode == "widget" and self._box is not None:
            self._box.children[0].value = f"{self.title}: {summary}"

    # -- internals ----------------------------------------------------------------------------
    def _row(self, layer: str) -> _Row:
        row = self.rows.get(layer)
        if row is None:
            row = self.rows[layer] = _Row(layer)
            if self.mode == "widget":
                self._add_widget_row(row)
        return row

    def _say(self, line: str) -> None:
        self.lines.append(line)
        print(line, file=self._out or sys.stdout, flush=True)

    def _add_widget_row(self, row: _Row) -> None:
        import ipywidgets as w

        if self._box is None:
            self._box = w.VBox([w.Label(self.title)])
            try:
                from IPython.display import display

                display(self._box)
            except ImportError:  # pragma: no cover - IPython is a dependency
                pass
        bar = w.IntProgress(value=0, min=0, max=1, bar_style="info")
        row.widgets = (bar, w.Label("waiting"))
        self._box.children = (*self._box.children,
                              w.HBox([w.Label(row.layer, layout=w.Layout(width="9em")), *row.widgets]))

    def _draw(self, row: _Row, *, force: bool = False, label: str | None = None) -> None:
        bar, text = row.widgets
        total = row.total or 0
        # a comm message per stream chunk would flood the frontend: redraw on each whole percent
        pct = int(100 * row.current / total) if total else 0
        if not force and pct == row._shown:
            return
        row._shown = pct
        bar.max = max(total, 1)
        bar.value = min(row.current, bar.max) if row.state not in FINAL_STATES else bar.max
        if row.state in FINAL_STATES:
            bar.bar_style = "danger" if row.state == "failed" else "success"
        text.value = label or (f"{row.state} {human_size(row.current)} / {human_size(total)}" if total
                               else row.state)

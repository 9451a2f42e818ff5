"""Where nbops keeps its state: ``$NBOPS_HOME`` or ``~/.local/share/nbops``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The nbops state directory (the lab, the history store, caches)."""
    env = os.environ.get("NBOPS_HOME")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "nbops").resolve()


def history_path() -> Path:
    env = os.environ.get("NBOPS_HISTORY")
    return Path(env).expanduser().resolve() if env else home() / "history.sqlite"


def lab_dir() -> Path:
    return home() / "lab"

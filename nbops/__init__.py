"""nbops: Docker Build → Distribute → Deploy from Jupyter notebooks.

``%load_ext nbops`` registers the magics; nothing heavy (docker, pandas, matplotlib) is imported
until a magic or a core function needs it.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:  # noqa: ANN001 - IPython's shell
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:  # noqa: ANN001
    pass

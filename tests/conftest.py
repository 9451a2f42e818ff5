"""Shared fixtures. Engine tests share ONE real lab per test session, in its own temporary home.

The lab is started on first use and removed at the end (``nbops lab down``), so a test run never
depends on what an earlier run left behind. Set NBOPS_TEST_KEEP_LAB=1 to keep it for debugging.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Short paths: unix socket paths must stay under 108 bytes.
_HOME = Path(tempfile.mkdtemp(prefix="nbt-", dir="/tmp"))
os.environ["NBOPS_HOME"] = str(_HOME)
os.environ["NBOPS_HISTORY"] = str(_HOME / "history.sqlite")
os.environ["NBOPS_PROGRESS"] = "text"
os.environ.pop("DOCKER_HOST", None)


@pytest.fixture(autouse=True, scope="module")
def _history_per_module(request):
    """Each test module records into its own history store (kernels it starts inherit the path),
    so no module can see, or damage, another module's rows."""
    name = "".join(c if c.isalnum() else "_" for c in request.node.nodeid)[-80:]
    old = os.environ.get("NBOPS_HISTORY")
    os.environ["NBOPS_HISTORY"] = str(_HOME / "history" / f"{name}.sqlite")
    yield
    if old is None:
        os.environ.pop("NBOPS_HISTORY", None)
    else:
        os.environ["NBOPS_HISTORY"] = old


@pytest.fixture(scope="session")
def nbops_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def lab(nbops_home):
    """The running test lab (1 node, registry, swarm)."""
    from nbops.lab import Lab

    the_lab = Lab(nbops_home / "lab")
    the_lab.up()
    yield the_lab
    if not os.environ.get("NBOPS_TEST_KEEP_LAB"):
        the_lab.down()


@pytest.fixture(scope="session")
def engine(lab):
    from nbops.engine import Engine

    eng = Engine.connect()
    yield eng
    eng.client.close()


@pytest.fixture
def history(tmp_path):
    from nbops.history import History

    h = History(tmp_path / "history.sqlite")
    yield h
    h.close()


@pytest.fixture
def ipshell():
    """A real IPython InteractiveShell with nbops loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbops")
    yield shell
    InteractiveShell.clear_instance()


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("NBOPS_TEST_KEEP_LAB"):
        shutil.rmtree(_HOME, ignore_errors=True)

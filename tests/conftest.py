"""Shared fixtures. Engine tests share ONE real lab per test session, in its own temporary home.

The lab is started on first use and removed at the end (``nbops lab down``), so a test run never
depends on what an earlier run left behind. Set NBOPS_TEST_KEEP_LAB=1 to keep it for debugging.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

# Short paths: unix socket paths must stay under 108 bytes.
_HOME = Path(tempfile.mkdtemp(prefix="nbt-", dir="/tmp"))
os.environ["NBOPS_HOME"] = str(_HOME)
os.environ["NBOPS_HISTORY"] = str(_HOME / "history.sqlite")
os.environ["NBOPS_PROGRESS"] = "text"
os.environ.pop("DOCKER_HOST", None)

# One test password and one test build secret for the whole run, fresh each time (a hit can never be a
# coincidence or a leftover): the tests that handle secrets use them, and when the run ends every saved
# notebook, history store (with its WAL) and log file it wrote is scanned for both — any hit fails the run.
SUITE_PASSWORD = os.environ.setdefault("NBOPS_SUITE_PASSWORD", "Pw-" + uuid.uuid4().hex)
SUITE_BUILD_SECRET = os.environ.setdefault("NBOPS_SUITE_BUILD_SECRET", "tok-" + uuid.uuid4().hex)
_AUDIT: dict = {}


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


@pytest.fixture(scope="session", autouse=True)
def _suite_tmp(tmp_path_factory):
    _AUDIT["roots"] = [_HOME, tmp_path_factory.getbasetemp()]


def _suite_audit(session) -> None:
    """Scan what the run wrote — executed notebooks, history stores, logs — for the suite's secrets."""
    from nbops.audit import scan

    files = [p for root in _AUDIT.get("roots", []) if root.exists() for p in root.rglob("*")
             if p.is_file() and not p.is_symlink() and (p.suffix in (".ipynb", ".log") or ".sqlite" in p.name)]
    kinds = {"notebooks": sum(p.suffix == ".ipynb" for p in files), "stores": sum(".sqlite" in p.name for p in files),
             "logs": sum(p.suffix == ".log" for p in files)}
    hits = []
    for secret in (SUITE_PASSWORD, SUITE_BUILD_SECRET):
        result = scan(files, secret) if files else None
        hits += [f"{h.path} ({h.form}, {h.where})" for h in (result.hits if result else [])]
    _AUDIT.update(kinds=kinds, hits=hits)
    if hits:
        session.exitstatus = 1


def pytest_sessionfinish(session, exitstatus):
    if session.testscollected and not session.config.option.collectonly:
        _suite_audit(session)
    if not os.environ.get("NBOPS_TEST_KEEP_LAB"):
        shutil.rmtree(_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    kinds = _AUDIT.get("kinds")
    if kinds is None:
        return
    hits = _AUDIT["hits"]
    terminalreporter.write_sep("=", "secret audit of what this run wrote")
    terminalreporter.write_line(
        f"{kinds['notebooks']} saved notebooks, {kinds['stores']} history-store files, {kinds['logs']} logs scanned "
        f"(nbops.audit: raw, JSON, URL, base64, hex forms) for the suite's test password and build secret: "
        f"{len(hits)} hit(s)")
    for h in hits:
        terminalreporter.write_line(f"  LEAK: {h}")

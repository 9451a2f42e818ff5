"""Faults against a real lab of this module's own: registry killed mid-push, a build interrupted,
the engine hung (SIGSTOP) and gone (stopped). Every magic answers with ONE line within its timeout,
and the history store holds only complete rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from IPython.core.error import UsageError

pytestmark = [pytest.mark.engine, pytest.mark.slow]

TIMEOUT = 3.0  # %config NbopsMagics.timeout during the faults
BOUND = TIMEOUT + 10  # correctness bound for a magic under a fault (not a performance target)


@pytest.fixture(scope="module")
def flab(helpers):
    lab = helpers.start_lab(nodes=1)
    yield lab
    helpers.stop_lab(lab)


@pytest.fixture(scope="module")
def node(flab):
    return flab.state().nodes[0]


@pytest.fixture(scope="module")
def shell(flab, node):
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbops")
    sh.run_line_magic("config", f"NbopsMagics.docker_host = {node.socket!r}")
    sh.run_line_magic("config", f"NbopsMagics.registry = {flab.state().registry!r}")
    sh.run_line_magic("config", f"NbopsMagics.timeout = {TIMEOUT}")
    sh.run_line_magic("config", "NbopsMagics.progress = 'none'")
    sh.run_cell_magic("dockerfile", "app", "FROM nbops/busybox\nRUN echo app > /app\nCMD [\"sleep\", \"3600\"]\n")
    built = sh.run_line_magic("build", "app -t rel/app:1")
    assert built.image_id
    yield sh
    InteractiveShell.clear_instance()


def _magics(shell):
    return shell.magics_manager.registry["NbopsMagics"]


def _history_is_complete() -> dict[str, int]:
    from nbops import history

    db = history.default().path
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        half = conn.execute("SELECT COUNT(*) FROM builds b WHERE ok=1 AND NOT EXISTS "
                            "(SELECT 1 FROM build_steps s WHERE s.build_id=b.id)").fetchone()[0]
        assert half == 0, "a successful build recorded without its steps"
        for table in ("builds", "pushes", "deploys"):
            bad = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE ts IS NULL").fetchone()[0]
            assert bad == 0
        assert conn.execute("SELECT COUNT(*) FROM builds WHERE ok=0 AND (error IS NULL OR error='')").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM pushes WHERE ok=0 AND (error IS NULL OR error='')").fetchone()[0] == 0
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("builds", "pushes", "deploys")}
    finally:
        conn.close()


# -- registry killed in the middle of a push --------------------------------------------------------
def test_registry_killed_mid_push(flab, node, shell, figures, helpers):
    from nbops import distribute, history
    from nbops.build import build
    from nbops.engine import Engine
    from nbops.errors import PushError, RegistryError

    st = flab.state()
    eng = Engine.connect(node.socket, timeout=60)
    tag = f"rel/big:{uuid.uuid4().hex[:8]}"
    build("FROM nbops/busybox\nRUN dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null\n", [tag],
          engine=eng, progress="none")
    uploads = Path(flab.dir) / "registry" / "data" / "docker" / "registry" / "v2" / "repositories" / "rel" / "big" / "_uploads"
    killed = threading.Event()

    def kill_when_uploading():
        def uploading():
            return uploads.is_dir() and any(
                f.stat().st_size > 1_000_000 for f in uploads.rglob("data") if f.is_file())
        if helpers.wait_until(uploading, timeout=60, step=0.02):
            os.kill(st.registry_pid, signal.SIGKILL)
            killed.set()

    killer = threading.Thread(target=kill_when_uploading, daemon=True)
    killer.start()
    t0 = time.monotonic()
    with pytest.raises((PushError, RegistryError)) as exc:
        distribute.push(tag, registry=st.registry, engine=eng, progress="none")
    elapsed = time.monotonic() - t0
    killer.join(5)
    assert killed.is_set(), "the push ended before the registry could be killed mid-upload"
    msg = exc.value.one_line()
    assert "\n" not in msg and "failed" in msg
    row = history.default().execute("SELECT ok, error FROM pushes WHERE image=? ORDER BY id DESC LIMIT 1", (tag,))
    assert row and row[0][0] == 0 and row[0][1], "the failed push is not recorded as failed"
    _history_is_complete()
    print(f"registry killed mid-push: {type(exc.value).__name__} after {elapsed:.1f} s: {msg}")
    figures.add("faults", injected=1, survived=1)
    eng.client.close()


# -- a long build interrupted like a kernel interrupt ---------------------------------------------------
KERNEL_LIKE = """
import sys
from nbops.build import build
from nbops.engine import Engine
eng = Engine.connect(sys.argv[1], timeout=30)
print("building", flush=True)
try:
    build(sys.argv[3], ["rel/slow:1"], engine=eng, builder=sys.argv[2], nocache=True, progress="none")
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()  # stay alive like a kernel after the interrupt
"""


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_interrupted_build_leaves_nothing(node, shell, builder, figures, helpers):
    import docker

    seconds = 4000 + int(uuid.uuid4().int % 900)  # a unique command line to find the build's process
    source = f"FROM nbops/busybox\nRUN sleep {seconds}\n"
    proc = subprocess.Popen([sys.executable, "-c", KERNEL_LIKE, node.socket, builder, source],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "building"
        assert helpers.wait_until(lambda: helpers.pids_with(f"sleep {seconds}"), timeout=60), "the build never ran its RUN step"
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        line = proc.stdout.readline().strip()
        assert line == "interrupted", proc.stderr.read() if proc.poll() is not None else line
        gone = helpers.wait_until(lambda: not helpers.pids_with(f"sleep {seconds}"), timeout=30)
        elapsed = time.monotonic() - t0
        assert gone, f"the build's process still runs {elapsed:.0f} s after the interrupt"
        client = docker.DockerClient(base_url=node.socket, version="auto", timeout=30)
        try:
            left = helpers.wait_until(
                lambda: not [c for c in client.containers.list(all=True) if "sleep" in " ".join(c.attrs["Config"]["Cmd"] or [])],
                timeout=20)
            assert left, "a build container was left behind"
        finally:
            client.close()
        print(f"{builder}: interrupt → build process gone in {elapsed:.1f} s")
        figures.add("faults", injected=1, survived=1)
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=10)


# -- the engine hung, then gone ---------------------------------------------------------------------
def _every_magic(shell, flab, fresh: bool) -> list[tuple[str, float, str]]:
    """Run each magic; return (magic, seconds, outcome). Every outcome must be a one-line UsageError
    (except %%dockerfile, which needs no engine, and lab status, which reports the node down)."""
    from nbops.lab import LabStatus

    results = []
    calls = [
        ("%build", lambda: shell.run_line_magic("build", "app -t rel/app:2")),
        ("%push", lambda: shell.run_line_magic("push", "rel/app:1")),
        ("%deploy", lambda: shell.run_line_magic("deploy", "rel/app:1 --name relweb --timeout 20")),
        ("%nbops lab status", lambda: shell.run_line_magic("nbops", f"lab status --home {flab.dir}")),
        ("%%dockerfile", lambda: shell.run_cell_magic("dockerfile", "offline", "FROM nbops/busybox\nRUN true\n")),
    ]
    for name, call in calls:
        if fresh:
            _magics(shell)._engines.clear()
        t0 = time.monotonic()
        try:
            out = call()
        except UsageError as exc:
            msg = str(exc)
            assert "\n" not in msg.strip() and msg.strip(), f"{name}: not one line: {msg!r}"
            outcome = f"UsageError: {msg}"
        else:
            if name == "%nbops lab status":
                assert isinstance(out, LabStatus) and not out.up, f"lab status says up: {out!r}"
                assert out.rows[0]["state"] == "down"
                outcome = "reported the node down"
            elif name == "%%dockerfile":
                outcome = "stored (offline)"
            else:
                pytest.fail(f"{name} succeeded against a broken engine: {out!r}")
        elapsed = time.monotonic() - t0
        assert elapsed < BOUND, f"{name} took {elapsed:.1f} s (timeout {TIMEOUT} s)"
        results.append((name, elapsed, outcome))
    return results


@pytest.mark.parametrize("fresh", [False, True], ids=["connected-before", "connect-during"])
def test_engine_hung(flab, node, shell, fresh, figures):
    before = _history_is_complete()
    os.kill(node.dockerd_pid, signal.SIGSTOP)
    try:
        results = _every_magic(shell, flab, fresh)
    finally:
        os.kill(node.dockerd_pid, signal.SIGCONT)
    for name, elapsed, outcome in results:
        print(f"hung engine, {name}: {elapsed:.1f} s → {outcome}")
        if name.startswith("%") and name not in ("%%dockerfile", "%nbops lab status"):
            assert "did not answer within" in outcome, outcome
    after = _history_is_complete()
    assert after["builds"] >= before["builds"]
    figures.add("faults", injected=len(results), survived=len(results))


def test_engine_gone(flab, node, shell, figures):
    from nbops.lab import _alive

    before = _history_is_complete()
    flab.stop_node(1)  # the lab's own fault command: dockerd shuts down as usual
    assert not _alive(node.dockerd_pid)
    results = _every_magic(shell, flab, fresh=False) + _every_magic(shell, flab, fresh=True)
    for name, elapsed, outcome in results:
        print(f"engine gone, {name}: {elapsed:.1f} s → {outcome}")
        if name in ("%build", "%push", "%deploy"):
            assert "no Docker engine answers" in outcome, outcome
    after = _history_is_complete()
    assert after == before, "a failed call against a stopped engine wrote history rows"
    figures.add("faults", injected=len(results), survived=len(results))

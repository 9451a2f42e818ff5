"""--live-restore: a single-node lab started with it keeps its containers running while its engine
restarts; the same container dies on a restart with the setting off (the control)."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def lrlab(helpers):
    lab = helpers.start_lab(nodes=1, live_restore=True, swarm=False)
    yield lab
    helpers.stop_lab(lab)


def _restart_engine(lab, *, live_restore: bool) -> None:
    """Stop the node's dockerd (the lab's fault command) and start it again, live-restore as asked."""
    from nbops.lab import _alive

    old = lab.node(1).dockerd_pid
    lab.stop_node(1, timeout=30)
    assert not _alive(old)
    st = lab.state()
    st.live_restore = live_restore  # start_node writes daemon.json from the lab state
    lab._save(st)
    lab.start_node(1, timeout=60)


def _alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_containers_survive_an_engine_restart(lrlab, figures):
    from nbops.engine import Engine

    node = lrlab.state().nodes[0]
    eng = Engine.connect(node.socket, timeout=30)
    # what `doctor` reports (issue 6's doctor is not on main yet): the engine's own view of the setting
    assert eng.info["LiveRestoreEnabled"] is True
    # nbops has no single-container orchestrator yet: the container is started with the SDK
    c = eng.call("run", eng.client.containers.run, "nbops/busybox", ["sleep", "3600"], detach=True, name="survivor")
    c.reload()
    pid, started = c.attrs["State"]["Pid"], c.attrs["State"]["StartedAt"]
    assert pid and _alive_pid(pid)
    eng.client.close()

    _restart_engine(lrlab, live_restore=True)
    assert _alive_pid(pid), "the container's process died while the engine restarted"
    eng = Engine.connect(node.socket, timeout=30)
    c = eng.client.containers.get("survivor")
    assert c.status == "running" and c.attrs["State"]["Pid"] == pid and c.attrs["State"]["StartedAt"] == started
    assert eng.info["LiveRestoreEnabled"] is True
    eng.client.close()
    figures.add("faults", injected=1, survived=1)

    # control: the same restart with live-restore off stops the container (so the check above can fail)
    _restart_engine(lrlab, live_restore=False)
    eng = Engine.connect(node.socket, timeout=30)
    assert eng.info["LiveRestoreEnabled"] is False
    c = eng.client.containers.get("survivor")
    assert not _alive_pid(pid) or c.status != "running" or c.attrs["State"]["Pid"] != pid
    eng.client.close()



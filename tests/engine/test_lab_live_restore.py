"""A single-engine lab with live-restore: a container outlives a restart of its engine.

The contrast (same steps, live-restore off) shows the check can fail: the engine stops the
container on shutdown and the restart policy starts a NEW process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from nbops.errors import LabError
from nbops.lab import Lab

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture
def single_lab(request):
    root = Path(tempfile.mkdtemp(prefix="nb7l-", dir="/tmp"))
    lab = Lab(root / "lab")
    try:
        lab.up(nodes=1, live_restore=request.param, swarm=False)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)


def _restart_engine_around_a_container(lab: Lab) -> tuple[dict, dict, bool]:
    """Run a container with a restart policy, stop and start the engine; return its state before and
    after, and whether its process was alive while the engine was down."""
    import docker

    node = lab.node(1)
    client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=30)
    try:
        c = client.containers.run("nbops/busybox:latest", ["sleep", "3608"], detach=True,
                                  restart_policy={"Name": "unless-stopped"}, name="survivor")
        c.reload()
        before = c.attrs["State"]
    finally:
        client.close()
    assert before["Running"] and before["Pid"] > 0
    stopped = lab.stop_node(1)
    assert "stopped" in stopped.detail and not lab.is_up()
    alive_while_down = _pid_alive(before["Pid"])
    lab.start_node(1)
    client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=30)
    try:
        deadline = time.monotonic() + 30
        after = client.containers.get("survivor").attrs["State"]
        while not after["Running"] and time.monotonic() < deadline:  # the restart policy may take a moment
            time.sleep(0.3)
            after = client.containers.get("survivor").attrs["State"]
    finally:
        client.close()
    return before, after, alive_while_down


@pytest.mark.parametrize("single_lab", [True], indirect=True, ids=["live-restore"])
def test_container_survives_engine_restart_with_live_restore(single_lab):
    assert single_lab.state().live_restore
    before, after, alive_while_down = _restart_engine_around_a_container(single_lab)
    assert alive_while_down, "with live-restore the container keeps running while its engine is down"
    assert after["Running"]
    assert after["Pid"] == before["Pid"] and after["StartedAt"] == before["StartedAt"]


@pytest.mark.parametrize("single_lab", [False], indirect=True, ids=["no-live-restore"])
def test_without_live_restore_the_container_is_restarted_not_kept(single_lab):
    before, after, alive_while_down = _restart_engine_around_a_container(single_lab)
    assert not alive_while_down
    assert after["Running"], "the restart policy brings it back"
    assert after["Pid"] != before["Pid"]


def test_live_restore_with_swarm_is_one_clear_error(tmp_path):
    with pytest.raises(LabError) as err:
        Lab(tmp_path / "lab").up(nodes=1, live_restore=True, swarm=True)
    assert "--no-swarm" in str(err.value)
    with pytest.raises(LabError):
        Lab(tmp_path / "lab").up(nodes=0)
    assert not (tmp_path / "lab").exists()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

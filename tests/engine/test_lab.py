"""The multi-node workshop lab against the real thing: 3 dockerds in their own namespaces, a registry,
a swarm. One 3-node lab for the whole module, in its own temporary directory (not the session lab).

Tests run in file order: the lab comes up, a service spreads, faults reschedule its tasks, a killed
run is cleaned by the next ``up``, and ``down`` leaves nothing behind (checked independently).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbops.errors import LabError
from nbops.lab import Lab

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SLEEP = "3607"  # a distinctive command line: `sleep 3607` exists only in this module's containers


def wait_for(fn: Callable[[], Any], *, timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with its last value after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def lab3():
    root = Path(tempfile.mkdtemp(prefix="nb7-", dir="/tmp"))
    lab = Lab(root / "lab")
    try:
        lab.up(nodes=3)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def manager(lab3):
    import docker

    client = docker.DockerClient(base_url=lab3.state().nodes[0].socket, version="1.41", timeout=30)
    yield client
    client.close()


def running_by_node(manager, service_name: str) -> dict[str, int]:
    """hostname → number of tasks the swarm wants running and that report running."""
    names = {n.id: n.attrs["Description"]["Hostname"] for n in manager.nodes.list()}
    svc = manager.services.get(service_name)
    out: dict[str, int] = {}
    for t in svc.tasks():
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running":
            host = names.get(t.get("NodeID", ""), "?")
            out[host] = out.get(host, 0) + 1
    return out


def all_ready(lab: Lab, n: int = 3) -> bool:
    nodes = lab.swarm_nodes()
    return len(nodes) == n and all(v["state"] == "ready" for v in nodes.values())


# -- up ---------------------------------------------------------------------------------------------
def test_three_node_lab_comes_up(lab3):
    import docker

    status = lab3.status()
    assert status.up, status
    df = status.to_frame()
    assert len(df) == 3
    assert list(df["state"]) == ["up", "up", "up"]
    assert list(df["swarm"]) == ["ready", "ready", "ready"]
    assert list(df["role"]) == ["manager", "worker", "worker"]
    assert df["address"].nunique() == 3
    assert all(v.startswith("20.10") for v in df["engine"])
    assert (df["rss_mb"] > 0).all()
    # each engine reports its own hostname (own UTS namespace) and node label
    hostnames = []
    for node in lab3.state().nodes:
        client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=10)
        try:
            info = client.info()
        finally:
            client.close()
        hostnames.append(info["Name"])
        assert f"nbops.node={node.name}" in info["Labels"]
        assert info["Swarm"]["LocalNodeState"] == "active"
    assert hostnames == ["node1", "node2", "node3"]
    # the swarm's own view: three ready nodes, labelled for placement
    assert all_ready(lab3)
    assert all(f"node{i}" in repr(status) for i in (1, 2, 3))


def test_nothing_leaves_the_lab(lab3):
    """A node routes only the lab subnet: a pull from Docker Hub fails at once as unreachable (no DNS
    query to the host's resolver, no timeout), while the lab registry stays reachable."""
    import docker

    node = lab3.state().nodes[1]
    routes = subprocess.run(["ip", "-n", node.netns, "route"], capture_output=True, text=True, check=True).stdout
    assert "default" not in routes and lab3.state().subnet.split("/")[0].rsplit(".", 1)[0] in routes, routes
    client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=60)
    try:
        with pytest.raises(docker.errors.APIError) as err:
            client.images.pull("docker.io/library/nbops-never-there", tag="1")
        assert "network is unreachable" in str(err.value), str(err.value)
        assert client.images.pull(f"{lab3.state().registry}/nbops/busybox", tag="latest").id
    finally:
        client.close()


def test_up_twice_is_harmless(lab3):
    before = lab3.state()
    status = lab3.up(nodes=3)
    after = lab3.state()
    assert status.up
    assert [n.dockerd_pid for n in after.nodes] == [n.dockerd_pid for n in before.nodes]
    assert after.registry_pid == before.registry_pid
    assert after.subnet == before.subnet


def test_bad_fault_target_is_one_clear_error(lab3):
    with pytest.raises(LabError) as err:
        lab3.stop_node("node7")
    assert "node7" in str(err.value) and "node1, node2, node3" in str(err.value)


# -- a service spreads, faults reschedule it ---------------------------------------------------------
@pytest.fixture(scope="module")
def spread_service(lab3, manager):
    import docker

    image = f"{lab3.state().registry}/nbops/busybox:latest"
    svc = manager.services.create(image, ["sleep", SLEEP], name="spread",
                                  mode=docker.types.ServiceMode("replicated", replicas=3))
    yield svc
    import requests

    if lab3.is_up():  # the last tests take the lab down, and the service with it
        try:
            svc.remove()
        except (docker.errors.DockerException, requests.RequestException):
            pass


def test_replicated_service_spreads_over_the_nodes(lab3, manager, spread_service):
    where = wait_for(lambda: (w := running_by_node(manager, "spread")) and sum(w.values()) == 3 and w,
                     timeout=60, what="3 running tasks")
    assert sorted(where) == ["node1", "node2", "node3"], where
    # the workers pulled the image from the lab registry (they had only the retagged base before)
    for node in lab3.state().nodes[1:]:
        out = subprocess.run(["docker", "-H", node.socket, "images", "--format", "{{.Repository}}"],
                             capture_output=True, text=True, timeout=20).stdout
        assert f"{lab3.state().registry}/nbops/busybox" in out


def test_stopped_node_gets_its_tasks_rescheduled(lab3, manager, spread_service):
    wait_for(lambda: "node3" in running_by_node(manager, "spread"), timeout=60, what="a task on node3")
    result = lab3.stop_node(3, crash=True)
    assert result.node == "node3" and result.seconds < 10, result
    assert lab3.status().to_frame().set_index("node").loc["node3", "state"] == "down"
    wait_for(lambda: lab3.swarm_nodes()["node3"]["state"] == "down", timeout=60, what="node3 marked down")
    where = wait_for(lambda: (w := running_by_node(manager, "spread")) and sum(w.values()) == 3
                     and "node3" not in w and w, timeout=60, what="3 tasks running off node3")
    assert set(where) <= {"node1", "node2"}
    # heal: the node comes back and rejoins
    lab3.start_node(3)
    wait_for(lambda: all_ready(lab3), timeout=60, what="node3 ready again")
    assert lab3.status().up


def test_drain_moves_tasks_off_and_activate_brings_the_node_back(lab3, manager, spread_service):
    wait_for(lambda: "node2" in running_by_node(manager, "spread"), timeout=60, what="a task on node2")
    lab3.drain("node2")
    assert lab3.swarm_nodes()["node2"]["availability"] == "drain"
    wait_for(lambda: (w := running_by_node(manager, "spread")) and sum(w.values()) == 3 and "node2" not in w,
             timeout=60, what="tasks moved off the drained node2")
    lab3.activate("node2")
    assert lab3.swarm_nodes()["node2"]["availability"] == "active"


def test_faults_from_the_command_line(lab3):
    def nbops(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nbops.cli", "lab", *args, "--home", str(lab3.dir)],
                              capture_output=True, text=True, timeout=120)

    res = nbops("fault", "drain", "node3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("drain node3: availability drain")
    assert lab3.swarm_nodes()["node3"]["availability"] == "drain"
    res = nbops("fault", "activate", "3")
    assert res.returncode == 0, res.stderr
    assert lab3.swarm_nodes()["node3"]["availability"] == "active"
    for bad, words in ((("fault", "stop"), "needs a node"), (("fault", "stop", "node9"), "no node 'node9'"),
                       (("fault", "melt", "node1"), "invalid choice")):
        res = nbops(*bad)
        assert res.returncode == 1 and words in res.stderr, res
        assert res.stderr.strip().count("\n") == 0, res.stderr
    assert all_ready(lab3)


def test_disconnected_node_is_lost_then_heals(lab3, manager, spread_service):
    # cut a worker off (the manager must stay reachable to watch the rescheduling)
    spread_service.scale(6)
    wait_for(lambda: "node3" in running_by_node(manager, "spread"), timeout=60, what="a task on node3")
    lab3.disconnect(3)
    try:
        wait_for(lambda: lab3.swarm_nodes()["node3"]["state"] == "down", timeout=60, what="node3 lost")
        wait_for(lambda: (w := running_by_node(manager, "spread")) and sum(w.values()) == 6
                 and "node3" not in w, timeout=60, what="6 tasks running off node3")
    finally:
        lab3.reconnect(3)
    wait_for(lambda: all_ready(lab3), timeout=60, what="node3 back after reconnect")


def test_restart_manager_keeps_the_swarm(lab3, manager, spread_service):
    old_pid = lab3.node(1).dockerd_pid
    result = lab3.restart_manager()
    assert lab3.node(1).dockerd_pid != old_pid
    assert result.seconds < 60
    wait_for(lambda: all_ready(lab3), timeout=60, what="all nodes ready after the manager restart")
    # the service survived in the raft store and converges to its 6 replicas again
    import docker

    client = docker.DockerClient(base_url=lab3.node(1).socket, version="1.41", timeout=30)
    try:
        wait_for(lambda: sum(running_by_node(client, "spread").values()) == 6, timeout=90,
                 what="6 running tasks after the manager restart")
    finally:
        client.close()


# -- a cached base reaches every node ------------------------------------------------------------------
def test_cached_base_image_reaches_every_node(lab3, monkeypatch):
    """The import/cache/distribute half of the Debian base, offline: the cache is seeded with a tiny
    rootfs, so debootstrap (which needs Debian's mirror) must not run at all."""
    import docker

    rootfs = lab3.cache_dir / "seed"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "cat", "bash"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    (rootfs / "etc" / "os-release").write_text("ID=nbseed\n")
    tar = lab3.cache_dir / "debian-nbseed-minbase.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    monkeypatch.setattr("nbops.lab.Lab._debootstrap", lambda *a, **k: pytest.fail("debootstrap ran"))
    result = lab3.debian_base("nbseed")
    assert result.image == "nbops/debian:nbseed" and not result.built and result.size_mb > 0.5
    assert "from the cache" in repr(result)
    for node in lab3.state().nodes:
        client = docker.DockerClient(base_url=node.socket, version="1.41", timeout=30)
        try:
            out = client.containers.run("nbops/debian:nbseed", ["cat", "/etc/os-release"], remove=True)
        finally:
            client.close()
        assert out.decode().strip() == "ID=nbseed", node.name
    with pytest.raises(LabError):
        lab3.debian_base("Not a suite!")


# -- a killed run, then down -------------------------------------------------------------------------
def test_killed_run_is_cleaned_by_the_next_up(lab3):
    st = lab3.state()
    sleepers = _pgrep(f"sleep {SLEEP}")
    assert sleepers, "the service's containers should be running before the kill"
    for n in st.nodes:
        os.kill(n.dockerd_pid, signal.SIGKILL)
    time.sleep(0.5)
    # the engines are gone, their containers are not: exactly what a killed run leaves behind
    assert not lab3.is_up()
    assert _pgrep(f"sleep {SLEEP}")
    status = lab3.up(nodes=3)
    assert status.up
    new = lab3.state()
    assert all(a.dockerd_pid != b.dockerd_pid for a, b in zip(st.nodes, new.nodes, strict=True))
    assert not set(sleepers) & set(_pgrep(f"sleep {SLEEP}")), "old containers survived the new up"
    assert all_ready(lab3)


def test_down_leaves_nothing_behind(lab3):
    st = lab3.state()
    lab3.down()
    left = lab3.leftovers()
    assert all(v == [] for v in left.values()), left
    # and independently of Lab.leftovers():
    prefix = f"nb-{lab3.id}"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not re.search(rf"\b{prefix}\b", links) and f"{prefix}-" not in links
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert st.gateway + "/" not in addrs
    assert str(lab3.dir) not in Path("/proc/mounts").read_text()
    assert not _pgrep(str(lab3.dir))
    assert not _pgrep(f"sleep {SLEEP}")
    assert not list(Path("/sys/fs/cgroup/pids").glob(prefix + "*"))
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    assert prefix not in rules
    assert not lab3.dir.exists()
    assert not lab3.status().rows and repr(lab3.status()).endswith("(start it with `nbops lab up`)")


def _pgrep(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


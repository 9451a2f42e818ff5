"""A 2-node swarm lab of its own: placement from the NodePicker, spread preferences, global mode, a fixed
host port with start-first where a free node exists, an overlay network (dnsrr) across nodes, doctor."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploy_images import build_web  # noqa: E402

from nbops import deploy  # noqa: E402
from nbops.deploy import swarm  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab2():
    from nbops.engine import Engine
    from nbops.lab import Lab

    home = Path(tempfile.mkdtemp(prefix="nbm-", dir="/tmp"))
    the_lab = Lab(home / "lab")
    try:
        the_lab.up(nodes=2)
        eng = Engine.connect(the_lab.state().nodes[0].socket, timeout=60)
        reg = the_lab.status().registry
        yield the_lab, eng, build_web(eng, reg, "v1"), build_web(eng, reg, "v2")
        eng.client.close()
    finally:
        if not os.environ.get("NBOPS_TEST_KEEP_LAB"):
            the_lab.down(quiet=True)
            shutil.rmtree(home, ignore_errors=True)


def _nodes_of(r):
    return sorted(t["node"] for t in r.tasks)


def test_node_picker_constraint_places_tasks(lab2, history):
    from nbops.widgets import NodePicker

    _, eng, v1, _ = lab2
    picker = NodePicker(eng)
    assert sorted(picker.hosts) == ["node1", "node2"]
    assert set(picker.to_frame()["availability"]) == {"active"}
    picker.value = ("node2",)
    assert picker.constraints == ["node.hostname==node2"]
    try:
        r = deploy.deploy(v1, name="picked", replicas=2, publish=["8080"], init=True, engine=eng, history=history,
                          timeout=90, **picker.deploy_options())
        assert _nodes_of(r) == ["node2", "node2"]
        assert {addr for addr, _ in r.endpoints} == {lab2[0].state().nodes[1].ip}
    finally:
        swarm.remove("picked", engine=eng)


def test_spread_global_and_fixed_port_start_first(lab2, history):
    _, eng, v1, v2 = lab2
    try:
        r = deploy.deploy(v1, name="spread", replicas=4, preferences=["spread=node.labels.nbops.node"], init=True,
                          engine=eng, history=history, timeout=90)
        assert _nodes_of(r) == ["node1", "node1", "node2", "node2"]
        g = deploy.deploy(v1, name="glob", mode="global", init=True, engine=eng, history=history, timeout=90)
        assert _nodes_of(g) == ["node1", "node2"]
        # one replica on a fixed host port: start-first can place the new task on the other node
        upd = "parallelism=1,delay=0,monitor=2s,order=start-first"
        deploy.deploy(v1, name="fixed", replicas=1, publish=["18080:8080"], update=upd, init=True, engine=eng,
                      history=history, timeout=90)
        f2 = deploy.deploy(v2, name="fixed", replicas=1, publish=["18080:8080"], update=upd, init=True, probe=True,
                           engine=eng, history=history, timeout=90)
        assert f2.ok and f2.tasks[0]["ports"] == [18080]
        assert f2.probe.requests > 0
    finally:
        for name in ("spread", "glob", "fixed"):
            swarm.remove(name, engine=eng)


def test_local_only_image_warns_on_many_nodes_and_runs_pinned_here(lab2, history):
    """An image in no registry: on a 2-node swarm the deploy says the other node cannot pull it; pinned to
    this engine's node (the only eligible one) there is no such warning and the service runs, by image id."""
    import io

    from deploy_images import GOOD, WEB

    _, eng, v1, _ = lab2
    local = "t-local/web:only"
    eng.client.images.build(fileobj=io.BytesIO(WEB.format(version="local", check=GOOD).encode()), tag=local,
                            rm=True, forcerm=True)
    sw = swarm.Swarm(eng, history)
    try:
        assert not eng.client.images.get(local).attrs.get("RepoDigests")
        many = sw.validate(deploy.DeploySpec(image=local, name="loc", replicas=2))
        assert any("t-local/web:only is in no registry" in w and "push it first" in w for w in many), many
        pushed = sw.validate(deploy.DeploySpec(image=v1, name="loc", replicas=2))
        assert not any("in no registry" in w for w in pushed), pushed
        here = sw.validate(deploy.DeploySpec(image=local, name="loc", replicas=1,
                                             constraints=["node.hostname==node1"]))
        assert not any("in no registry" in w for w in here), here
        r = deploy.deploy(local, name="loc", replicas=1, constraints=["node.hostname==node1"], init=True,
                          engine=eng, history=history, timeout=90)
        assert r.ok and _nodes_of(r) == ["node1"] and not any("in no registry" in w for w in r.warnings)
        image = eng.client.services.get("loc").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert image == eng.client.images.get(local).id  # pinned by id: no node tries Docker Hub
    finally:
        swarm.remove("loc", engine=eng)
        eng.client.images.remove(local, force=True)


def test_overlay_dnsrr_across_nodes(lab2, history):
    _, eng, v1, _ = lab2
    try:
        r = deploy.deploy(v1, name="mesh", replicas=2, networks=["meshnet"], constraints=[],
                          preferences=["spread=node.labels.nbops.node"], init=True, engine=eng, history=history,
                          timeout=90)
        assert _nodes_of(r) == ["node1", "node2"]
        assert eng.api.inspect_service("mesh")["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        local = [t for t in eng.api.tasks(filters={"service": "mesh", "desired-state": "running"})
                 if t["Status"].get("ContainerStatus", {}).get("ContainerID")
                 and t["NodeID"] == eng.info["Swarm"]["NodeID"]][0]
        box = eng.client.containers.get(local["Status"]["ContainerStatus"]["ContainerID"])
        code, out = box.exec_run(["sh", "-c", "nslookup mesh 127.0.0.11"])
        assert code == 0, out
        ips = sorted({line.split()[-1] for line in out.decode().splitlines()
                      if line.startswith("Address") and "127.0.0.11" not in line})
        assert len(ips) == 2, out.decode()
        mine = box.attrs["NetworkSettings"]["Networks"]["meshnet"]["IPAddress"]
        other = [ip for ip in ips if ip != mine][0]
        code, out = box.exec_run(["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {other} 8080"])
        assert b"200 OK" in out and b"v1" in out, out
    finally:
        swarm.remove("mesh", engine=eng)


def test_doctor_across_two_nodes(lab2):
    from nbops import doctor

    _, eng, _, _ = lab2
    df = doctor.doctor(eng).to_frame()
    assert set(df["node"]) == {"node1", "node2", "cluster"}
    assert (df.query("check == 'registry'")["status"] == "ok").all() and len(df.query("check == 'registry'")) == 2
    assert df.query("check == 'engine versions'")["status"].iloc[0] == "ok"

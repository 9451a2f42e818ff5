"""Real swarm rollouts on the lab: deploy, scale, rolling updates (start-first, stop-first), a failing
update rolled back automatically, a manual rollback, the timeline frame and the probe's counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploy_images import build_web  # noqa: E402

from nbops import deploy  # noqa: E402
from nbops.deploy import swarm  # noqa: E402
from nbops.errors import ConfigError, RolloutFailed  # noqa: E402

pytestmark = pytest.mark.engine

FAST = "parallelism=1,delay=0,monitor=3s,failure_action=rollback"
TIMELINE_COLUMNS = ["ts", "time", "service", "task", "slot", "node", "image", "state", "health", "message"]


@pytest.fixture(scope="module")
def images(engine, lab):
    reg = lab.status().registry
    return {v: build_web(engine, reg, v, healthy=(v != "bad")) for v in ("v1", "v2", "bad")}


@pytest.fixture
def service(engine, request):
    name = f"t{request.node.name[5:20].replace('_', '')}"[:20]
    swarm.remove(name, engine=engine)
    yield name
    swarm.remove(name, engine=engine)


def _digest_of(engine, ref):
    return swarm.Swarm(engine).resolve_image(ref)


def test_deploy_scale_and_start_first_update_without_downtime(engine, images, service, history):
    r1 = deploy.deploy(images["v1"], name=service, replicas=2, publish=["8080"], update=FAST + ",order=start-first",
                       init=True, engine=engine, history=history, timeout=60)
    assert r1.outcome == "healthy" and r1.ok
    assert [t["state"] for t in r1.tasks] == ["running", "running"]
    assert all(t["health"] == "healthy" for t in r1.tasks)
    assert len(r1.endpoints) == 2
    df = r1.to_frame()
    assert list(df.columns) == TIMELINE_COLUMNS
    assert {"starting", "running"} <= set(df["state"])
    assert "healthy" in set(df["health"].dropna())
    assert df["message"].str.contains("health_status: healthy").any(), "health changes come from the event stream"

    # scale: no rolling update, just one more task
    r2 = deploy.deploy(images["v1"], name=service, replicas=3, publish=["8080"], update=FAST + ",order=start-first",
                       init=True, engine=engine, history=history, timeout=60)
    assert r2.outcome == "healthy" and len(r2.tasks) == 3 and not r2.updates

    # rolling update start-first with the probe on
    r3 = deploy.deploy(images["v2"], name=service, replicas=3, publish=["8080"], update=FAST + ",order=start-first",
                       init=True, probe=True, engine=engine, history=history, timeout=90)
    v2 = _digest_of(engine, images["v2"])
    assert r3.outcome == "healthy"
    assert {t["image"] for t in r3.tasks} == {v2}
    assert [u.state for u in r3.updates][0] == "updating" and r3.updates[-1].state == "completed"
    assert set(r3.marks) >= {"apply", "update", "done"}
    df3 = r3.to_frame()
    assert df3["image"].nunique() == 2, "the timeline shows old and new tasks"
    assert (df3["state"] == "shutdown").sum() >= 3, "three old tasks were shut down"
    # start-first: a new task is healthy before its old one stops
    for slot, rows in df3.groupby("slot"):
        new_healthy = rows[(rows["image"] == v2) & (rows["health"] == "healthy")]["ts"].min()
        old_gone = rows[(rows["image"] != v2) & (rows["state"] == "shutdown")]["ts"].min()
        assert new_healthy <= old_gone, f"slot {slot}: old task stopped before the new one was healthy"
    probe = r3.probe
    print(f"\nPROBE start-first 3 replicas: {probe.requests} requests, {probe.failures} failed")
    assert probe.requests > 50
    assert probe.failures / probe.requests < 0.05
    per_s = probe.per_second()
    assert per_s["requests"].sum() == probe.requests
    # recorded: the deploy row, its meta (updates, probe) and every timeline row
    row = history.deploys().iloc[-1]
    assert row["outcome"] == "healthy" and json.loads(row["meta"])["probe"]["requests"] == probe.requests
    n = history.execute("SELECT COUNT(*) FROM rollout_events WHERE deploy_id = ?", (r3.deploy_id,))[0][0]
    assert n == len(df3)

    import matplotlib

    matplotlib.use("Agg")
    ax = r3.plot()
    out = Path(__file__).parents[2] / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(out / "rollout-start-first.png", dpi=90, bbox_inches="tight")
    assert {"update", "done"} <= {t.get_text().strip() for t in ax.texts}


def test_stop_first_single_replica_shows_downtime(engine, images, service, history):
    deploy.deploy(images["v1"], name=service, replicas=1, publish=["8080"], update=FAST + ",order=stop-first",
                  init=True, engine=engine, history=history, timeout=60)
    r = deploy.deploy(images["v2"], name=service, replicas=1, publish=["8080"], update=FAST + ",order=stop-first",
                      init=True, probe=True, engine=engine, history=history, timeout=90)
    assert r.outcome == "healthy"
    df = r.to_frame()
    v2 = _digest_of(engine, images["v2"])
    old_gone = df[(df["image"] != v2) & (df["state"] == "shutdown")]["ts"].min()
    new_healthy = df[(df["image"] == v2) & (df["health"] == "healthy")]["ts"].min()
    assert old_gone < new_healthy, "stop-first stops the old task before the new one is healthy"
    print(f"\nPROBE stop-first 1 replica: {r.probe.requests} requests, {r.probe.failures} failed")
    assert r.probe.failures > 0, "the probe measures the gap a stop-first update leaves"
    assert (r.probe.to_frame()["error"] == "no running task").any()

    import matplotlib

    matplotlib.use("Agg")
    from nbops import plot

    per_s = r.probe.per_second()
    assert per_s["failed"].sum() == r.probe.failures
    ax = plot.probe_timeline(per_s, t0=float(r.probe.to_frame()["ts"].min()), marks=r.marks)
    ax.figure.savefig(Path(__file__).parents[2] / "docs" / "img" / "probe-stop-first.png", dpi=90, bbox_inches="tight")


def test_failing_update_rolls_back_automatically(engine, images, service, history):
    deploy.deploy(images["v1"], name=service, replicas=2, publish=["8080"], update=FAST + ",order=start-first",
                  init=True, engine=engine, history=history, timeout=60)
    with pytest.raises(RolloutFailed) as info:
        deploy.deploy(images["bad"], name=service, replicas=2, publish=["8080"],
                      update=FAST + ",order=start-first", rollback="parallelism=0,monitor=1s", init=True,
                      probe=True, engine=engine, history=history, timeout=90)
    err = info.value
    r = err.result
    assert err.outcome == "rolled_back" and "rolled back" in str(err)
    assert [u.state for u in r.updates][:1] == ["updating"]
    assert {"rollback_started", "rollback_completed"} <= {u.state for u in r.updates}
    assert r.failed_tasks and all("unhealthy" in f["error"] for f in r.failed_tasks)
    assert r.failed_tasks[0]["image"] == _digest_of(engine, images["bad"])
    v1 = _digest_of(engine, images["v1"])
    assert {t["image"] for t in r.tasks} == {v1} and len(r.tasks) == 2
    assert any("rollback" in line for line in r.story())
    assert "rollback" in r.marks and r.marks["update"] < r.marks["rollback"]
    df = r.to_frame()
    assert "unhealthy" in set(df["health"].dropna()) or (df["state"] == "failed").any()
    assert r.probe.failures / r.probe.requests < 0.05, "start-first kept the old tasks serving"
    row = history.deploys().iloc[-1]
    assert row["outcome"] == "rolled_back" and "unhealthy" in row["error"]

    import matplotlib

    matplotlib.use("Agg")
    ax = r.plot()
    ax.figure.savefig(Path(__file__).parents[2] / "docs" / "img" / "rollout-rollback.png", dpi=90, bbox_inches="tight")


def test_manual_rollback(engine, images, service, history):
    with pytest.raises(ConfigError, match="no service"):
        deploy.rollback(service, engine=engine, history=history)
    deploy.deploy(images["v1"], name=service, replicas=2, publish=["8080"], update=FAST, init=True,
                  engine=engine, history=history, timeout=60)
    with pytest.raises(ConfigError, match="no previous spec"):
        deploy.rollback(service, engine=engine, history=history)
    deploy.deploy(images["v2"], name=service, replicas=2, publish=["8080"], update=FAST, init=True,
                  engine=engine, history=history, timeout=90)
    r = deploy.rollback(service, engine=engine, history=history, timeout=90)
    v1 = _digest_of(engine, images["v1"])
    assert r.ok and r.outcome == "rolled_back" and r.action == "rollback"
    assert r.image == v1 and {t["image"] for t in r.tasks} == {v1}
    assert r.updates[-1].state == "rollback_completed"
    assert r.to_frame()["image"].nunique() == 2


def test_lint_blocks_start_first_with_fixed_host_port(engine, images, service, history):
    with pytest.raises(ConfigError, match="start-first with the fixed host port"):
        deploy.deploy(images["v1"], name=service, replicas=1, publish=["18080:8080"], update="order=start-first",
                      engine=engine, history=history)
    with pytest.raises(ConfigError, match="cannot each bind host port"):
        deploy.deploy(images["v1"], name=service, replicas=2, publish=["18080:8080"], engine=engine, history=history)
    with pytest.raises(ConfigError, match="no ready, active node"):
        deploy.deploy(images["v1"], name=service, constraints=["node.labels.nbops.node==nowhere"], engine=engine,
                      history=history)
    assert swarm.Swarm(engine)._find(service) is None, "nothing was applied"


def test_lint_warns_monitor_shorter_than_health_window(engine, images, service, history):
    # the image checks every 1 s with 3 retries; with a 10 s start period the window is 13 s
    r = deploy.deploy(images["v1"], name=service, replicas=1, update="monitor=1s,failure_action=rollback",
                      health=deploy.HealthSpec(start_period=10), init=True, engine=engine, history=history, timeout=60)
    assert any("moby/moby#24854" in w and "13 s" in w for w in r.warnings)
    assert json.loads(history.deploys().iloc[-1]["meta"])["warnings"] == r.warnings


def test_global_mode_placement_network_storage_secrets_limits(engine, images, service, history, tmp_path):
    secret_value = "s3cr3t-value-do-not-print"
    (tmp_path / "token").write_text(secret_value)
    (tmp_path / "app.conf").write_text("color=blue\n")
    (tmp_path / "bind").mkdir()
    (tmp_path / "bind" / "hello.txt").write_text("from the host\n")
    net = f"{service}-net"
    secret = f"{service}-token"
    config = f"{service}-conf"
    try:
        r = deploy.deploy(
            images["v1"], name=service, mode="global", publish=["8080"], engine=engine, history=history, timeout=60,
            constraints=["node.labels.nbops.node==node1", "node.role==manager"], preferences=["spread=node.labels.nbops.node"],
            networks=[net], mounts=[f"{service}-data:/data", f"{tmp_path / 'bind'}:/host:ro", "tmpfs:/scratch"],
            secrets=[f"{secret}={tmp_path / 'token'}"], configs=[f"{config}={tmp_path / 'app.conf'}:/etc/app.conf"],
            cpus=0.5, memory="64m", reserve_memory="16m", restart="on-failure:3", restart_delay="1s",
            update="parallelism=2,delay=1s,monitor=3s,max_failure_ratio=0.5,failure_action=pause,order=stop-first",
            rollback="parallelism=1,delay=0s,monitor=2s,failure_action=continue,order=stop-first", init=True)
        assert r.outcome == "healthy" and len(r.tasks) == 1
        spec = engine.api.inspect_service(service)["Spec"]
        tt = spec["TaskTemplate"]
        assert spec["Mode"] == {"Global": {}}
        assert tt["Placement"]["Constraints"] == ["node.labels.nbops.node==node1", "node.role==manager"]
        assert tt["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.nbops.node"}}]
        assert tt["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024 ** 2}
        assert tt["RestartPolicy"]["Condition"] == "on-failure" and tt["RestartPolicy"]["MaxAttempts"] == 3
        assert spec["UpdateConfig"] == {"Parallelism": 2, "Delay": 1_000_000_000, "FailureAction": "pause",
                                        "Monitor": 3_000_000_000, "MaxFailureRatio": 0.5, "Order": "stop-first"}
        assert spec["RollbackConfig"]["FailureAction"] == "continue" and spec["RollbackConfig"]["Monitor"] == 2_000_000_000
        assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        network = engine.client.networks.get(net)
        assert network.attrs["Driver"] == "overlay" and network.attrs["Attachable"] is True
        # inside the running task: the secret, the config, the mounts
        cid = engine.api.tasks(filters={"service": service, "desired-state": "running"})[0]["Status"]["ContainerStatus"]["ContainerID"]
        box = engine.client.containers.get(cid)

        def sh(cmd):
            code, out = box.exec_run(["sh", "-c", cmd])
            assert code == 0, out
            return out.decode()

        assert sh(f"cat /run/secrets/{secret}") == secret_value
        assert sh("cat /etc/app.conf") == "color=blue\n"
        assert sh("cat /host/hello.txt") == "from the host\n"
        assert "ro" in sh("grep ' /host ' /proc/mounts")
        assert "tmpfs" in sh("grep ' /scratch ' /proc/mounts")
        sh("echo kept > /data/x && cat /data/x")
        assert net in box.attrs["NetworkSettings"]["Networks"]
        # the secret's value is nowhere in what nbops shows or records
        shown = repr(r) + r._repr_html_() + r.to_frame().to_string()
        assert secret_value not in shown
        dump = "\n".join(str(x) for x in history.execute("SELECT * FROM deploys")
                         + history.execute("SELECT * FROM rollout_events"))
        assert secret_value not in dump
    finally:
        swarm.remove(service, engine=engine)
        import time

        time.sleep(1.5)
        for coll, name in ((engine.client.secrets, secret), (engine.client.configs, config), (engine.client.networks, net)):
            for obj in coll.list():
                if obj.name == name:
                    try:
                        obj.remove()
                    except Exception:
                        pass

"""The single-engine backend on the lab's engine with plain containers: replace gated on HEALTHCHECK,
keep the old container until the new one is healthy, roll back when it never gets healthy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploy_images import build_web  # noqa: E402

from nbops import deploy  # noqa: E402
from nbops.deploy import engine as engine_backend  # noqa: E402
from nbops.errors import ConfigError, RolloutFailed  # noqa: E402

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def images(engine, lab):
    reg = lab.status().registry
    return {v: build_web(engine, reg, v, healthy=(v != "bad")) for v in ("v1", "v2", "bad")}


@pytest.fixture
def app(engine):
    engine_backend.remove("eapp", engine=engine)
    yield "eapp"
    engine_backend.remove("eapp", engine=engine)


def _running(engine, name):
    return [c for c in engine.client.containers.list(filters={"label": f"org.nbops.service={name}"})]


def test_engine_replace_gated_on_health_and_rollback(engine, images, app, history):
    r1 = deploy.deploy(images["v1"], name=app, orchestrator="engine", publish=["8080"], restart="unless-stopped",
                       engine=engine, history=history, timeout=60)
    assert r1.ok and r1.tasks[0]["health"] == "healthy" and r1.tasks[0]["restart_policy"] == "unless-stopped"
    first = _running(engine, app)
    assert len(first) == 1

    r2 = deploy.deploy(images["v2"], name=app, orchestrator="engine", publish=["8080"], probe=True, init=True,
                       engine=engine, history=history, timeout=60)
    assert r2.ok and r2.image == images["v2"]
    now = _running(engine, app)
    assert [c.labels["org.nbops.image"] for c in now] == [images["v2"]]
    df = r2.to_frame()
    old, new = first[0].id, now[0].id
    new_healthy = df[(df["task"] == new) & (df["health"] == "healthy")]["ts"].min()
    old_stopped = df[(df["task"] == old) & (df["message"] == "stopped: replaced")]["ts"].min()
    assert new_healthy < old_stopped, "the old container ran until the new one was healthy"
    print(f"\nPROBE engine replace: {r2.probe.requests} requests, {r2.probe.failures} failed")
    assert r2.probe.requests > 20 and r2.probe.failures == 0

    with pytest.raises(RolloutFailed) as info:
        deploy.deploy(images["bad"], name=app, orchestrator="engine", publish=["8080"], engine=engine,
                      history=history, timeout=60)
    bad = info.value.result
    assert bad.outcome == "rolled_back"
    assert "unhealthy" in bad.failed_tasks[0]["error"]
    assert [u.state for u in bad.updates] == ["updating", "rollback_started", "rollback_completed"]
    assert [c.id for c in _running(engine, app)] == [new], "the healthy container kept serving"

    back = deploy.rollback(app, orchestrator="engine", engine=engine, history=history, timeout=60)
    assert back.ok and back.outcome == "rolled_back" and back.image == images["v1"]
    assert [c.labels["org.nbops.image"] for c in _running(engine, app)] == [images["v1"]]


def test_engine_fixed_port_is_stop_first_and_restores_old(engine, images, app, history):
    deploy.deploy(images["v1"], name=app, orchestrator="engine", publish=["18181:8080"], engine=engine,
                  history=history, timeout=60)
    with pytest.raises(RolloutFailed):
        deploy.deploy(images["bad"], name=app, orchestrator="engine", publish=["18181:8080"], engine=engine,
                      history=history, timeout=60)
    running = _running(engine, app)
    assert [c.labels["org.nbops.image"] for c in running] == [images["v1"]], "the old container was started again"


def test_engine_rejects_swarm_only_options(engine, images, app, history):
    with pytest.raises(ConfigError, match="does not support constraints"):
        deploy.deploy(images["v1"], name=app, orchestrator="engine", constraints=["node.role==manager"],
                      engine=engine, history=history)
    with pytest.raises(ConfigError, match="runs one container"):
        deploy.deploy(images["v1"], name=app, orchestrator="engine", replicas=3, engine=engine, history=history)
    with pytest.raises(ConfigError, match="bad restart policy"):
        deploy.deploy(images["v1"], name=app, orchestrator="engine", restart="sometimes", engine=engine, history=history)

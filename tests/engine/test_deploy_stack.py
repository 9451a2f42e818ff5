"""A compose file deployed as a stack through Debian's docker CLI, watched like swarm services."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploy_images import build_web  # noqa: E402

from nbops import deploy  # noqa: E402
from nbops.deploy import stack  # noqa: E402
from nbops.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.engine

COMPOSE = """version: "3.8"
services:
  web:
    image: {image}
    init: true
    ports:
      - target: 8080
        mode: host
    deploy:
      replicas: 2
      update_config: {{parallelism: 1, delay: 0s, monitor: 3s, failure_action: rollback, order: start-first}}
      rollback_config: {{parallelism: 0, monitor: 1s}}
      resources: {{limits: {{memory: 64M}}}}
  worker:
    image: {image}
    init: true
    command: ["sh", "-c", "httpd -f -p 8080 -h /www"]
    deploy:
      replicas: 1
"""


def test_stack_deploy_and_update(engine, lab, history, tmp_path):
    if not engine.cli().path:
        pytest.skip("no docker CLI (install Debian's docker.io for /usr/bin/docker)")
    reg = lab.status().registry
    v1, v2 = build_web(engine, reg, "v1"), build_web(engine, reg, "v2")
    compose = tmp_path / "stack.yml"
    compose.write_text(COMPOSE.format(image=v1))
    try:
        r = deploy.deploy(name="st", orchestrator="stack", compose=str(compose), engine=engine, history=history,
                          timeout=90)
        assert r.ok and r.orchestrator == "stack"
        assert sorted(t["service"] for t in r.tasks) == ["st_web", "st_web", "st_worker"]
        assert all(t["state"] == "running" for t in r.tasks)
        assert set(r.to_frame()["service"]) == {"st_web", "st_worker"}
        spec = engine.api.inspect_service("st_web")["Spec"]
        assert spec["UpdateConfig"]["Order"] == "start-first" and spec["UpdateConfig"]["FailureAction"] == "rollback"

        compose.write_text(COMPOSE.format(image=v2))
        r2 = deploy.deploy(name="st", orchestrator="stack", compose=str(compose), engine=engine, history=history,
                           timeout=120)
        assert r2.ok
        assert {t["image"] for t in r2.tasks} == {v2}
        assert {"updating", "completed"} <= {u.state for u in r2.updates}
    finally:
        stack.remove("st", engine=engine)


def test_stack_needs_a_compose_file(engine, history, tmp_path):
    with pytest.raises(ConfigError, match="no compose file"):
        deploy.deploy(name="st", orchestrator="stack", compose=str(tmp_path / "missing.yml"), engine=engine,
                      history=history)

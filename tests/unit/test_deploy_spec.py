"""Parsing and lint of deploy specs (no engine)."""

from __future__ import annotations

import pytest

from nbops.deploy import DeploySpec, Port, UpdatePolicy, parse_bytes, parse_duration
from nbops.deploy.swarm import constraint_matches, parse_mount
from nbops.errors import ConfigError
from nbops.health import Healthcheck, check_probe_address, lint_update


def test_update_policy_parse_and_api():
    pol = UpdatePolicy.parse("parallelism=2,delay=500ms,failure_action=rollback,monitor=5s,max_failure_ratio=0.2,order=start-first")
    assert pol.to_api() == {"Parallelism": 2, "Delay": 500_000_000, "FailureAction": "rollback",
                            "Monitor": 5_000_000_000, "MaxFailureRatio": 0.2, "Order": "start-first"}
    assert UpdatePolicy.parse(None).effective()["order"] == "stop-first"
    for bad in ("order=sideways", "failure_action=explode", "max_failure_ratio=2", "speed=3", "parallelism"):
        with pytest.raises(ConfigError):
            UpdatePolicy.parse(bad)


def test_units():
    assert parse_duration("2s") == 2 and parse_duration("1m") == 60 and parse_duration("250ms") == 0.25
    assert parse_bytes("64m") == 64 * 1024 ** 2 and parse_bytes("1g") == 1024 ** 3
    with pytest.raises(ConfigError):
        parse_duration("soon")
    with pytest.raises(ConfigError):
        DeploySpec(image="x", name="y", memory="lots")
    assert Port.parse("80:8080/udp") == Port(8080, 80, "udp")


def test_mounts(tmp_path):
    assert parse_mount("data:/data") == {"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": False}
    assert parse_mount(f"{tmp_path}:/h:ro")["Type"] == "bind"
    assert parse_mount("tmpfs:/t") == {"Type": "tmpfs", "Target": "/t"}
    with pytest.raises(ConfigError, match="does not exist"):
        parse_mount("/no/such/dir:/x")
    with pytest.raises(ConfigError):
        parse_mount("relative")


def test_constraints():
    node = {"hostname": "n1", "role": "manager", "labels": {"zone": "a"}, "id": "x"}
    assert constraint_matches("node.hostname==n1", node)
    assert not constraint_matches("node.labels.zone!=a", node)
    assert constraint_matches("node.role == manager", node)
    with pytest.raises(ConfigError):
        constraint_matches("node.hostname~n1", node)


def test_monitor_lint():
    hc = Healthcheck.from_api({"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000, "Retries": 3},
                              {"StartPeriod": 4_000_000_000})
    assert hc.time_to_unhealthy == 10
    assert lint_update(10, hc, "rollback") == []
    assert "moby/moby#24854" in lint_update(5, hc, "rollback")[0]
    assert lint_update(1, None, "rollback") == []
    assert Healthcheck.from_api({"Test": ["NONE"]}) is None


def test_probe_refuses_public_addresses():
    check_probe_address("127.0.0.1")
    check_probe_address("10.200.3.2")
    with pytest.raises(ConfigError, match="loopback or private"):
        check_probe_address("8.8.8.8")


def test_probe_counts_against_a_local_server():
    import http.server
    import threading
    import time

    from nbops.health import Probe

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    targets = [("127.0.0.1", srv.server_address[1])]
    probe = Probe(lambda: targets, interval=0.02, deadline=time.time() + 10).start()
    time.sleep(0.5)
    srv.shutdown()
    srv.server_close()
    targets.append(("127.0.0.1", 9))  # nothing listens there: refused
    time.sleep(0.3)
    targets.clear()  # no endpoint at all: "no running task"
    time.sleep(0.2)
    probe.stop()
    df = probe.to_frame()
    assert probe.requests == len(df) > 10
    assert df["ok"].iloc[0]
    assert probe.failures > 0 and (df["error"] == "no running task").any()
    assert probe.per_second()["requests"].sum() == probe.requests


def test_result_story_marks_and_update_merging():
    from nbops.deploy import DeployResult, RolloutEvent, UpdateState
    from nbops.deploy.swarm import _note_update

    updates: list[UpdateState] = []
    _note_update(updates, 10.5, "updating", "update in progress")
    _note_update(updates, 10.2, "updating", "")  # the event's earlier time wins, the message stays
    _note_update(updates, 14.0, "rollback_started", "update rolled back due to failure")
    assert [(u.ts, u.state, u.message) for u in updates] == [
        (10.2, "updating", "update in progress"), (14.0, "rollback_started", "update rolled back due to failure")]
    ev = RolloutEvent(ts=12.0, service="s", task="t1", slot=1, node="n", image="bad", state="failed",
                      health="unhealthy", message="task: non-zero exit (143): dockerexec: unhealthy container")
    r = DeployResult(service="s", image="good", orchestrator="swarm", outcome="rolled_back", duration_s=5,
                     events=[ev], tasks=[], started=10.0, updates=updates,
                     failed_tasks=[{"ts": 12.0, "task": "t1", "slot": 1, "node": "n", "image": "bad",
                                    "state": "failed", "error": ev.message}])
    assert not r.ok
    assert r.marks == {"apply": 10.0, "update": 10.2, "rollback": 14.0}
    story = r.story()
    assert story[0].startswith("+  0.2 s  service updating") and "unhealthy container" in story[1]
    assert "rollback_started" in story[2]
    assert list(r.to_frame()["state"]) == ["failed"]
    assert "1 failed task(s)" in repr(r) and "unhealthy container" in r._repr_html_()


def test_env_that_looks_like_a_secret_is_linted():
    """`-e DB_PASSWORD=…` works, but swarm keeps the value in plain sight: one warning per such NAME,
    with the swarm-secret hint, and never the value itself."""
    from nbops.deploy import Orchestrator, lint_env

    env = {"DB_PASSWORD": "hunter2-value", "API_TOKEN": "t0k-value", "app_secret": "s3c-value",
           "AWS_ACCESS_KEY_ID": "ak-value", "MODE": "prod", "PORT": "8080", "PWD": "/srv"}
    warnings = lint_env(env)
    named = sorted(w.split()[1] for w in warnings)
    assert named == ["API_TOKEN", "AWS_ACCESS_KEY_ID", "DB_PASSWORD", "app_secret"]
    for w in warnings:
        assert "raft store" in w and "docker service inspect" in w and "/run/secrets/" in w
        assert not any(v in w for v in env.values() if v.endswith("-value"))
    pw = next(w for w in warnings if w.startswith("env DB_PASSWORD"))
    assert "--secret db_password=./db_password.txt" in pw
    assert lint_env({}) == [] and lint_env(None) == []
    # the lint runs before anything is applied: the base validate (every backend) returns it
    spec = DeploySpec(image="x", name="web", env={"DB_PASSWORD": "hunter2-value"})
    assert Orchestrator.validate(object.__new__(Orchestrator), spec) == lint_env(spec.env)


@pytest.mark.parametrize("message, status, gone", [
    ("the engine refused to inspect service mgr: rpc error: code = Canceled desc = grpc: the client connection "
     "is closing", 500, True),  # what the lab's manager answered while restarting
    ("rpc error: code = Unavailable desc = transport is closing", 500, True),
    ("This node is not a swarm manager. Use \"docker swarm init\"", 503, True),
    ("rpc error: code = Unknown desc = The swarm does not have a leader", 500, True),
    ("service mgr not found", 404, False),
    ("rpc error: code = InvalidArgument desc = bad spec", 400, False),
])
def test_which_engine_errors_mean_the_manager_is_away(message, status, gone):
    from nbops.deploy.swarm import _manager_gone
    from nbops.errors import EngineError

    assert _manager_gone(EngineError(message, status=status)) is gone

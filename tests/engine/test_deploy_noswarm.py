"""A single engine without swarm (and with live-restore): the engine backend works, swarm refuses with
one clear error, doctor reports live-restore."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from deploy_images import build_web  # noqa: E402

from nbops import deploy, doctor  # noqa: E402
from nbops.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain():
    from nbops.engine import Engine
    from nbops.lab import Lab

    home = Path(tempfile.mkdtemp(prefix="nbs-", dir="/tmp"))
    the_lab = Lab(home / "lab")
    try:
        the_lab.up(swarm=False, live_restore=True)
        eng = Engine.connect(the_lab.state().nodes[0].socket, timeout=60)
        yield the_lab, eng
        eng.client.close()
    finally:
        if not os.environ.get("NBOPS_TEST_KEEP_LAB"):
            the_lab.down(quiet=True)
            shutil.rmtree(home, ignore_errors=True)


def test_engine_backend_without_swarm(plain, history):
    lab, eng = plain
    v1 = build_web(eng, lab.status().registry, "v1")
    with pytest.raises(ConfigError, match="not in a swarm"):
        deploy.deploy(v1, name="solo", engine=eng, history=history)
    r = deploy.deploy(v1, name="solo", orchestrator="engine", publish=["8080"], init=True, restart="on-failure:2",
                      engine=eng, history=history, timeout=60)
    assert r.ok and r.tasks[0]["restart_policy"] == "on-failure"
    (address, port), = r.endpoints
    assert address == lab.state().nodes[0].ip, "the endpoint is the node's lab address"
    import urllib.request

    with urllib.request.urlopen(f"http://{address}:{port}/", timeout=3) as resp:
        assert resp.read().decode().strip() == "v1"

    report = doctor.doctor(eng).to_frame()
    live = report.query("check == 'live-restore'")
    assert live["value"].iloc[0] == "enabled" and live["status"].iloc[0] == "ok"
    assert report.query("check == 'swarm'")["value"].iloc[0] == "inactive"

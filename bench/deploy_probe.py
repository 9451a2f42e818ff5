"""Zero downtime, measured: probe requests and failures during a rolling update of 3 replicas.

Baseline: order=stop-first. Candidate: order=start-first. Same image pair, same update config
otherwise (parallelism 1, delay 0, monitor 3 s), same probe (one request every 50 ms, round-robin over
the running tasks' endpoints). Starts its own lab in a temporary NBOPS_HOME and removes it.

    .venv/bin/python bench/deploy_probe.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

home = tempfile.mkdtemp(prefix="nbb-probe-", dir="/tmp")
os.environ["NBOPS_HOME"] = home
os.environ["NBOPS_HISTORY"] = f"{home}/history.sqlite"
os.environ.pop("DOCKER_HOST", None)
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "engine"))

from deploy_images import build_web  # noqa: E402

from nbops import deploy  # noqa: E402
from nbops.deploy import swarm  # noqa: E402
from nbops.engine import Engine  # noqa: E402
from nbops.lab import Lab  # noqa: E402


def rollout(engine, v1, v2, order: str) -> tuple[int, int, float]:
    name = f"bench-{order}"
    swarm.remove(name, engine=engine)
    upd = f"parallelism=1,delay=0,monitor=3s,failure_action=rollback,order={order}"
    deploy.deploy(v1, name=name, replicas=3, publish=["8080"], update=upd, init=True, engine=engine, timeout=90)
    r = deploy.deploy(v2, name=name, replicas=3, publish=["8080"], update=upd, init=True, probe=True,
                      engine=engine, timeout=120)
    swarm.remove(name, engine=engine)
    return r.probe.requests, r.probe.failures, r.duration_s


def main() -> None:
    lab = Lab()
    try:
        lab.up()
        engine = Engine.connect()
        reg = lab.status().registry
        v1, v2 = build_web(engine, reg, "v1"), build_web(engine, reg, "v2")
        results = {order: rollout(engine, v1, v2, order) for order in ("stop-first", "start-first")}
        for order, (req, fail, dur) in results.items():
            print(f"{order:<12} rolling update of 3 replicas: {req} requests, {fail} failed "
                  f"({100 * fail / max(req, 1):.1f} %), {dur:.1f} s")
        base = results["stop-first"][1] / max(results["stop-first"][0], 1)
        cand = results["start-first"][1] / max(results["start-first"][0], 1)
        ratio = f"{cand / base:.3f}" if base else ("1 (both zero)" if not cand else "inf")
        print(f"failure rate start-first / stop-first = {cand:.4f} / {base:.4f} = {ratio}")
    finally:
        lab.down(quiet=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

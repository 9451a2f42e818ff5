"""Load through nbops against a lab engine of this module's own: 20 concurrent builds and 50 containers
(10 services x 5 replicas, deployed concurrently). Every call completes or fails with an nbops error,
none runs past its timeout; throughput and the slowest call are reported (figures, not assertions)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

BUILDS, BUILD_TIMEOUT = 20, 300.0
SERVICES, REPLICAS, DEPLOY_TIMEOUT = 10, 5, 180.0
ENGINE_TIMEOUT = 60.0
SLACK = 30.0  # a call may overrun its timeout by the time to notice and clean up, no more


@pytest.fixture(scope="module")
def llab(helpers):
    lab = helpers.start_lab(nodes=1)
    yield lab
    helpers.stop_lab(lab)


def _timed(fn, *args, **kwargs):
    from nbops.errors import NbopsError

    t0 = time.monotonic()
    try:
        fn(*args, **kwargs)
        outcome = "ok"
    except NbopsError as exc:
        assert exc.message.strip()
        outcome = f"failed clearly: {exc.one_line()[:120]}"
    return outcome, time.monotonic() - t0


def _run_all(jobs, limit: float, workers: int):
    """Run jobs concurrently; a job still running after ``limit`` counts as hung."""
    results: list[tuple[str, float] | None] = [None] * len(jobs)
    done = threading.Event()

    def run(i):
        results[i] = _timed(*jobs[i])

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, i) for i in range(len(jobs))]
        for f in futures:
            f.result(timeout=max(1.0, limit - (time.monotonic() - t0)))
    done.set()
    return results, time.monotonic() - t0


def test_20_concurrent_builds_and_50_containers(llab, figures):
    from nbops.build import build
    from nbops.deploy import deploy
    from nbops.deploy.swarm import remove
    from nbops.engine import Engine

    node = llab.state().nodes[0]

    def engine():
        return Engine.connect(node.socket, timeout=ENGINE_TIMEOUT)

    run_id = uuid.uuid4().hex[:6]

    def one_build(i):
        src = f"FROM nbops/busybox\nRUN echo {run_id}-{i} > /id && sleep 1\nCMD [\"sleep\", \"3600\"]\n"
        eng = engine()
        try:
            build(src, [f"rel/load{i}:{run_id}"], engine=eng, nocache=True, timeout=BUILD_TIMEOUT, progress="none")
        finally:
            eng.client.close()

    # baseline: 3 of the same builds one after the other
    seq = [_timed(one_build, 100 + i) for i in range(3)]
    assert all(o == "ok" for o, _ in seq), seq
    seq_mean = sum(d for _, d in seq) / len(seq)

    results, wall = _run_all([(one_build, i) for i in range(BUILDS)], limit=BUILD_TIMEOUT + SLACK, workers=BUILDS)
    assert all(r is not None for r in results)
    build_ok = sum(1 for o, _ in results if o == "ok")
    slowest_build = max(d for _, d in results)
    assert slowest_build <= BUILD_TIMEOUT + SLACK
    print(f"\n{BUILDS} concurrent builds: {build_ok} ok in {wall:.1f} s ({BUILDS / wall * 60:.1f}/min), "
          f"slowest {slowest_build:.1f} s; sequential baseline {seq_mean:.1f} s/build "
          f"→ concurrency speedup ×{BUILDS * seq_mean / wall:.2f}")
    for o, d in results:
        if o != "ok":
            print(f"  build {d:.1f} s: {o}")

    services = [f"load-{run_id}-{i}" for i in range(SERVICES)]

    def one_deploy(i):
        eng = engine()
        try:
            deploy(f"rel/load{i}:{run_id}", name=services[i], replicas=REPLICAS, engine=eng, timeout=DEPLOY_TIMEOUT)
        finally:
            eng.client.close()

    try:
        dres, dwall = _run_all([(one_deploy, i) for i in range(SERVICES)], limit=DEPLOY_TIMEOUT + SLACK, workers=SERVICES)
        deploy_ok = sum(1 for o, _ in dres if o == "ok")
        slowest_deploy = max(d for _, d in dres)
        assert slowest_deploy <= DEPLOY_TIMEOUT + SLACK
        eng = engine()
        running = [c for c in eng.client.containers.list() if c.labels.get("com.docker.swarm.service.name", "").startswith(f"load-{run_id}")]
        eng.client.close()
        print(f"{SERVICES}x{REPLICAS} containers: {deploy_ok}/{SERVICES} deploys healthy, {len(running)} containers "
              f"running after {dwall:.1f} s ({len(running) / dwall * 60:.1f}/min), slowest deploy {slowest_deploy:.1f} s")
        for o, d in dres:
            if o != "ok":
                print(f"  deploy {d:.1f} s: {o}")
        if deploy_ok == SERVICES:
            assert len(running) == SERVICES * REPLICAS
    finally:
        eng = engine()
        for s in services:
            try:
                remove(s, engine=eng)
            except Exception:
                pass
        eng.client.close()

    calls = BUILDS + SERVICES
    figures.add("load", calls=calls, held=calls, ok=build_ok + deploy_ok, failed_clearly=calls - build_ok - deploy_ok,
                hung=0, max_slowest_s=max(slowest_build, slowest_deploy), builds_per_min=BUILDS / wall * 60,
                containers_per_min=len(running) / dwall * 60, max_speedup=BUILDS * seq_mean / wall,
                max_containers=len(running))

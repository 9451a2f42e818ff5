"""Load through nbops against a lab engine of this module's own: 20 concurrent builds and 50 containers
(10 services x 5 replicas, deployed concurrently). Every call completes or fails with an nbops error,
none runs past its timeout, and all 50 containers run. Throughput, the slowest call and the time to
all 50 running — beside the docker CLI creating the same services on the same lab — are figures,
not assertions (the machine is shared; note the load average printed with them)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def test_20_concurrent_builds_and_50_containers(llab, figures, helpers):
    from nbops.build import build
    from nbops.deploy import deploy
    from nbops.engine import Engine

    node = llab.state().nodes[0]

    def engine():
        return Engine.connect(node.socket, timeout=ENGINE_TIMEOUT)

    eng0 = engine()

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
    load_build = os.getloadavg()[0]
    assert slowest_build <= BUILD_TIMEOUT + SLACK
    print(f"\n{BUILDS} concurrent builds (load {load_build:.1f}): {build_ok} ok in {wall:.1f} s ({BUILDS / wall * 60:.1f}/min), "
          f"slowest {slowest_build:.1f} s; sequential baseline {seq_mean:.1f} s/build "
          f"→ concurrency speedup ×{BUILDS * seq_mean / wall:.2f}")
    for o, d in results:
        if o != "ok":
            print(f"  build {d:.1f} s: {o}")

    services = [f"load-{run_id}-{i}" for i in range(SERVICES)]
    images = [eng0.api.inspect_image(f"rel/load{i}:{run_id}")["Id"] for i in range(SERVICES)]
    log = Path(node.dir) / "dockerd.log"
    log_mark = log.stat().st_size

    def one_deploy(i):
        eng = engine()
        try:
            deploy(f"rel/load{i}:{run_id}", name=services[i], replicas=REPLICAS, engine=eng, timeout=DEPLOY_TIMEOUT)
        finally:
            eng.client.close()

    try:
        dres, dwall = _run_all([(one_deploy, i) for i in range(SERVICES)], limit=DEPLOY_TIMEOUT + SLACK, workers=SERVICES)
        load_deploy = os.getloadavg()[0]
        deploy_ok = sum(1 for o, _ in dres if o == "ok")
        slowest_deploy = max(d for _, d in dres)
        assert slowest_deploy <= DEPLOY_TIMEOUT + SLACK
        running = _running(eng0, f"load-{run_id}-")
        print(f"{SERVICES}x{REPLICAS} containers: {deploy_ok}/{SERVICES} deploys healthy, {running} containers "
              f"running after {dwall:.1f} s ({running / dwall * 60:.1f}/min), slowest deploy {slowest_deploy:.1f} s "
              f"(load {load_deploy:.1f})")
        for o, d in dres:
            if o != "ok":
                print(f"  deploy {d:.1f} s: {o}")
        # the cause of the old 17/50: swarm pulled each local-only tag from Docker Hub (unreachable here)
        # before starting a task; nbops now pins such an image by id on a one-node placement
        hub = [line for line in log.read_bytes()[log_mark:].decode(errors="replace").splitlines() if "docker.io" in line]
        spec = eng0.api.inspect_service(services[0])["Spec"]
    finally:
        _remove(engine, services)

    # baseline: the docker CLI creating the same 10x5 services concurrently (same lab, same images by id)
    cli = eng0.cli()
    assert cli.path, "no docker CLI for the baseline"
    cli_services = [f"cli-{run_id}-{i}" for i in range(SERVICES)]
    helpers.wait_until(lambda: _running(eng0, f"load-{run_id}-") == 0, timeout=60)
    try:
        t0 = time.monotonic()
        procs = [subprocess.Popen([cli.path, "service", "create", "-d", "--no-resolve-image", "--name", name,
                                   "--replicas", str(REPLICAS), images[i]], env=cli.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i, name in enumerate(cli_services)]
        for p in procs:
            _, err = p.communicate(timeout=ENGINE_TIMEOUT)
            assert p.returncode == 0, err
        cli_running = helpers.wait_until(lambda: _running(eng0, f"cli-{run_id}-") == SERVICES * REPLICAS,
                                         timeout=DEPLOY_TIMEOUT, step=0.5)
        cli_wall = time.monotonic() - t0
        load_cli = os.getloadavg()[0]
    finally:
        _remove(engine, cli_services)
    print(f"docker CLI baseline: {SERVICES}x{REPLICAS} " + (f"running after {cli_wall:.1f} s" if cli_running else
          f"NOT all running after {cli_wall:.1f} s") + f" (load {load_cli:.1f}) → nbops/CLI ×{dwall / cli_wall:.2f}")

    eng0.client.close()

    all_up = deploy_ok == SERVICES and running == SERVICES * REPLICAS
    calls = BUILDS + SERVICES
    times = {**({"max_all_running_s": dwall} if all_up else {}),
             **({"max_cli_all_running_s": cli_wall} if cli_running else {})}
    figures.add("load", calls=calls, held=calls, ok=build_ok + deploy_ok, failed_clearly=calls - build_ok - deploy_ok,
                hung=0, max_slowest_s=max(slowest_build, slowest_deploy), builds_per_min=BUILDS / wall * 60,
                containers_per_min=running / dwall * 60, max_speedup=BUILDS * seq_mean / wall,
                max_containers=running, max_load=max(load_build, load_deploy, load_cli), **times)

    assert not hub, f"the lab engine tried Docker Hub during the deploys: {hub[:2]}"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == images[0], "a local-only image is pinned by id"
    assert spec["Labels"]["org.nbops.image"] == f"rel/load0:{run_id}"
    assert all_up, f"{running}/{SERVICES * REPLICAS} containers running; deploys: {dres}"


def _running(eng, prefix: str) -> int:
    """Running containers of services named ``prefix…`` (one list call: no per-container inspect to race)."""
    rows = eng.api.containers(filters={"status": "running", "label": "com.docker.swarm.service.name"})
    return sum(1 for c in rows if (c.get("Labels") or {}).get("com.docker.swarm.service.name", "").startswith(prefix))


def _remove(engine, names) -> None:
    from nbops.deploy.swarm import remove

    eng = engine()
    try:
        for s in names:
            try:
                remove(s, engine=eng)
            except Exception:
                pass
    finally:
        eng.client.close()

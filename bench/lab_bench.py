"""Benchmark the workshop lab: cold `up` for 1/3/5 nodes, `down`, and memory per node.

    .venv/bin/python bench/lab_bench.py [--nodes 1 3 5] [--no-baseline]

Targets (issue 7): `up --nodes 3` from cold ≤ 30 s, `down` ≤ 10 s, ≤ 5 nodes within 24 GB.
There is no external tool to compare with (Play with Docker is gone), so the ratios are against the
targets (< 1.0 meets them) and, for `down`, against a named baseline run in this script: the
graceful, one-node-after-another shutdown that `down` did before (each dockerd SIGTERMed and awaited;
a swarm dockerd waits 5 s for its ingress network).
Each run uses a fresh lab directory (cold: empty data roots, base image built again).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from nbops.lab import Lab, _rss

UP3_TARGET_S = 30.0
DOWN_TARGET_S = 10.0
MEMORY_BUDGET_MB = 24 * 1024


def one_run(nodes: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="nbb-", dir="/tmp"))
    lab = Lab(root / "lab")
    try:
        t0 = time.monotonic()
        status = lab.up(nodes=nodes)
        up_s = time.monotonic() - t0
        assert status.up, status
        mem = lab.memory()
        registry_mb = _rss_mb(lab.state().registry_pid)
        t0 = time.monotonic()
        lab.down()
        down_s = time.monotonic() - t0
        left = {k: v for k, v in lab.leftovers().items() if v}
        if left:
            raise SystemExit(f"down left {left}")
        return {"nodes": nodes, "up_s": up_s, "down_s": down_s,
                "mb_per_node": sum(mem.values()) / len(mem), "registry_mb": registry_mb}
    finally:
        lab.down(quiet=True)
        shutil.rmtree(root, ignore_errors=True)


def baseline_down(nodes: int) -> float:
    """The former `down`: stop each dockerd gracefully, one after the other, then clean up."""
    root = Path(tempfile.mkdtemp(prefix="nbb-", dir="/tmp"))
    lab = Lab(root / "lab")
    try:
        lab.up(nodes=nodes)
        t0 = time.monotonic()
        for i in range(1, nodes + 1):
            lab.stop_node(i, timeout=15)
        lab.down()
        return time.monotonic() - t0
    finally:
        lab.down(quiet=True)
        shutil.rmtree(root, ignore_errors=True)


def _rss_mb(pid: int | None) -> float:
    return round(_rss(pid) / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    rows = [one_run(n) for n in args.nodes]
    print(f"{'nodes':>5} {'up s':>6} {'up/30s':>7} {'down s':>7} {'down/10s':>9} "
          f"{'MB/node':>8} {'registry MB':>11} {'MB total/24GB':>14}")
    for r in rows:
        total = r["mb_per_node"] * r["nodes"] + r["registry_mb"]
        print(f"{r['nodes']:>5} {r['up_s']:>6.1f} {r['up_s'] / UP3_TARGET_S:>7.2f} {r['down_s']:>7.1f} "
              f"{r['down_s'] / DOWN_TARGET_S:>9.2f} {r['mb_per_node']:>8.1f} {r['registry_mb']:>11.1f} "
              f"{total / MEMORY_BUDGET_MB:>14.4f}")
    print("MB/node = RSS of the node's dockerd + containerd, idle swarm, no containers.")
    three = [r for r in rows if r["nodes"] == 3]
    if three:
        print(f"target `up --nodes 3` ≤ {UP3_TARGET_S:.0f} s: measured {three[0]['up_s']:.1f} s, "
              f"ratio {three[0]['up_s'] / UP3_TARGET_S:.2f}")
        print(f"target `down` (3 nodes) ≤ {DOWN_TARGET_S:.0f} s: measured {three[0]['down_s']:.1f} s, "
              f"ratio {three[0]['down_s'] / DOWN_TARGET_S:.2f}")
        if not args.no_baseline:
            base = baseline_down(3)
            print(f"baseline `graceful sequential down` (3 nodes): {base:.1f} s; "
                  f"down speed-up {base / three[0]['down_s']:.1f}x")


if __name__ == "__main__":
    main()

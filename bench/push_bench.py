"""Benchmark: nbops push vs `docker push`, and nbops archive export vs raw `docker save`.

Baselines: Debian's docker CLI (/usr/bin/docker) pointed at the same lab engine (DOCKER_HOST).
Same image, same registry kind, alternating order every round:

* cold: each push goes to a FRESH registry (new `docker-registry serve` on the lab gateway, empty
  storage), so every layer is uploaded (no cross-repo mounts);
* re-push: the same tag to the same registry again (every layer "already exists").
* archive: `nbops.archive.export` (uncompressed, with sha256) vs `docker save -o`.

Prints the median times and the ratio nbops / docker (target <= 1.05). Starts its own lab in a
temp dir and removes it, and every registry it started, at the end.

    .venv/bin/python bench/push_bench.py [--rounds 5] [--mb 60] [--progress none|text]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def fresh_registry(gateway: str, root: Path, procs: list) -> str:
    with socket.socket() as s:
        s.bind((gateway, 0))
        port = s.getsockname()[1]
    d = Path(tempfile.mkdtemp(prefix="reg-", dir=root))
    (d / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nhttp: {{addr: '{gateway}:{port}'}}\n"
        f"storage: {{filesystem: {{rootdirectory: '{d}/data'}}, delete: {{enabled: true}}}}\n")
    procs.append(subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from nbops.registry import wait_ready

    wait_ready(f"{gateway}:{port}")
    return f"{gateway}:{port}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=60, help="image payload in MB (random, spread over 4 layers)")
    ap.add_argument("--progress", choices=["none", "text"], default="none",
                    help="nbops' per-layer display during its pushes (text: one line per layer state change)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="nbpush-", dir="/tmp"))
    os.environ["NBOPS_HOME"] = str(home)
    os.environ["NBOPS_HISTORY"] = str(home / "history.sqlite")
    os.environ["NBOPS_PROGRESS"] = "none"
    os.environ.pop("DOCKER_HOST", None)
    from nbops import archive, distribute
    from nbops.engine import Engine
    from nbops.lab import Lab

    lab = Lab(home / "lab")
    procs: list[subprocess.Popen] = []
    try:
        print("starting a lab ...", flush=True)
        lab.up()
        st = lab.state()
        engine = Engine.connect(timeout=300)
        cli = "/usr/bin/docker"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = engine.address
        env["DOCKER_CONFIG"] = str(home / "docker-config")

        def docker(*a: str) -> None:
            subprocess.run([cli, *a], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        per = max(1, args.mb // 4)
        df = "FROM nbops/busybox:latest\n" + "".join(
            f"RUN head -c {per}000000 /dev/urandom > /data{i}\n" for i in range(4))
        engine.client.images.build(fileobj=io.BytesIO(df.encode()), tag="bench/app:1", forcerm=True)
        size = engine.client.images.get("bench/app:1").attrs["Size"]
        print(f"image bench/app:1: {size / 1e6:.0f} MB in 6 layers; {args.rounds} rounds, order alternates",
              flush=True)

        def nbops_push(ref: str) -> float:
            t = time.perf_counter()
            distribute.push("bench/app:1", ref, engine=engine, progress=args.progress)
            return time.perf_counter() - t

        def docker_push(ref: str) -> float:
            docker("tag", "bench/app:1", ref)
            t = time.perf_counter()
            docker("push", ref)
            return time.perf_counter() - t

        times: dict[str, list[float]] = {k: [] for k in ("nbops cold", "docker cold", "nbops re-push",
                                                          "docker re-push", "nbops export", "docker save")}
        for r in range(args.rounds):
            order = [("nbops", nbops_push), ("docker", docker_push)]
            if r % 2:
                order.reverse()
            for who, fn in order:
                reg = fresh_registry(st.gateway, home, procs)
                ref = f"{reg}/bench/app:1"
                times[f"{who} cold"].append(fn(ref))
                times[f"{who} re-push"].append(fn(ref))
                procs.pop().terminate()
            exports = [("nbops", lambda p: archive.export("bench/app:1", p, engine=engine)),
                       ("docker", lambda p: docker("save", "-o", str(p), "bench/app:1"))]
            if r % 2:
                exports.reverse()
            for who, fn in exports:
                path = home / f"{who}.tar"
                t = time.perf_counter()
                fn(path)
                times["nbops export" if who == "nbops" else "docker save"].append(time.perf_counter() - t)
                path.unlink()
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

        med = {k: statistics.median(v) for k, v in times.items()}
        tar_mb = size / 1e6
        print("\nmedians:")
        for k, v in med.items():
            print(f"  {k:15s} {v:7.3f} s")
        print(f"\nratio push cold   nbops/docker = {med['nbops cold'] / med['docker cold']:.3f}  (target <= 1.05)")
        print(f"ratio re-push     nbops/docker = {med['nbops re-push'] / med['docker re-push']:.3f}  (target <= 1.05)")
        print(f"archive export    nbops {tar_mb / med['nbops export']:.0f} MB/s vs docker save "
              f"{tar_mb / med['docker save']:.0f} MB/s; time ratio = {med['nbops export'] / med['docker save']:.3f}")
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        lab.down()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Build benchmark: nbops build() (Python API) vs `DOCKER_BUILDKIT=1 /usr/bin/docker build` vs the legacy
SDK build, alternately in one script, cold (--no-cache) and warm (everything cached).

Images, built FROM nbops/busybox (the lab's base):
  * small — 3 instructions;
  * big   — ~40 layers, ~300 MB: 20 COPY of 7.5 MB (random) context files + 20 RUN writing 7.5 MB each.

Usage:  .venv/bin/python bench/build_bench.py [--rounds N] [--only small|big] [--warm-only] [--no-legacy]
Uses $DOCKER_HOST when set, else starts its own lab in a temp dir (and removes it at the end).
Prints each figure (median of N rounds, seconds) and nbops' ratio to the fastest baseline (BuildKit CLI or
legacy SDK); target ≤ 1.05. ``nbops`` is build() as users call it: a warm build of unchanged inputs reuses
the image an earlier build made (no builder started; counted in the last line). ``nbops-noreuse`` is
build(reuse=False), i.e. always through BuildKit, shown beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_COPY, N_RUN, MB = 20, 20, 7.5


def dockerfiles() -> dict[str, str]:
    big = ["FROM nbops/busybox"]
    for i in range(N_COPY):
        big.append(f"COPY part{i:02d}.bin /data/part{i:02d}.bin")
    for i in range(N_RUN):
        # zeros: the layer bytes are real (the local store does not compress) without burning CPU on random data
        big.append(f"RUN dd if=/dev/zero of=/gen{i:02d}.bin bs=512k count={int(MB * 2)} 2>/dev/null")
    big.append('CMD ["ls", "-l", "/data"]')
    small = 'FROM nbops/busybox\nRUN echo hello > /hello\nCMD ["cat", "/hello"]\n'
    return {"small": small, "big": "\n".join(big) + "\n"}


def make_context(root: Path, name: str) -> Path:
    ctx = root / f"ctx-{name}"
    ctx.mkdir()
    if name == "big":
        for i in range(N_COPY):
            (ctx / f"part{i:02d}.bin").write_bytes(os.urandom(int(MB * 1024 * 1024)))
    return ctx


REUSED: dict[str, int] = {}  # runner -> warm builds answered by reuse (no builder started)


def run_nbops(engine, history, source, ctx, tag, nocache, reuse=True) -> float:
    from nbops.build import build

    t0 = time.perf_counter()
    res = build(source, [tag], engine=engine, context=ctx, nocache=nocache, builder="buildkit", history=history,
                progress="none", reuse=reuse)
    took = time.perf_counter() - t0
    if res.reused:
        who = "nbops" if reuse else "nbops-noreuse"
        REUSED[who] = REUSED.get(who, 0) + 1
    return took


def run_cli(engine, source, ctx, tag, nocache) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=engine.address, DOCKER_BUILDKIT="1")
    cmd = ["/usr/bin/docker", "build", "--progress=plain", "-f", "-", "-t", tag, str(ctx)]
    if nocache:
        cmd.insert(2, "--no-cache")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=source, text=True, capture_output=True, env=env, timeout=1800)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"docker build failed: {proc.stdout[-2000:]}")
    return took


def run_legacy(engine, source, ctx, tag, nocache) -> float:
    df = ctx / ".bench.Dockerfile"
    df.write_text(source)
    try:
        t0 = time.perf_counter()
        for chunk in engine.api.build(path=str(ctx), dockerfile=df.name, tag=tag, nocache=nocache, rm=True,
                                      forcerm=True, decode=True, timeout=1800):
            if "error" in chunk:
                raise SystemExit(f"legacy build failed: {chunk['error']}")
        return time.perf_counter() - t0
    finally:
        df.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["small", "big"])
    ap.add_argument("--no-legacy", action="store_true", help="skip the (slow) legacy builder")
    ap.add_argument("--warm-only", action="store_true",
                    help="one unmeasured cold build per builder, then only warm rounds (tighter warm figures)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nbb-", dir="/tmp"))
    lab = None
    if not os.environ.get("DOCKER_HOST"):
        os.environ["NBOPS_HOME"] = str(tmp)
        from nbops.lab import Lab

        lab = Lab(tmp / "lab")
        print(f"starting a lab in {tmp} ...", flush=True)
        lab.up(swarm=False)
    os.environ.setdefault("NBOPS_HISTORY", str(tmp / "history.sqlite"))
    from nbops.engine import Engine
    from nbops.history import History

    engine = Engine.connect(timeout=600)
    history = History(tmp / "history.sqlite")
    results: dict[tuple[str, str, str], list[float]] = {}
    try:
        for name, source in dockerfiles().items():
            if args.only and name != args.only:
                continue
            ctx = make_context(tmp, name)
            runners = {
                "nbops": lambda tag, nc, s=source, c=ctx: run_nbops(engine, history, s, c, tag, nc),
                "nbops-noreuse": lambda tag, nc, s=source, c=ctx: run_nbops(engine, history, s, c, tag, nc, False),
                "buildkit-cli": lambda tag, nc, s=source, c=ctx: run_cli(engine, s, c, tag, nc),
            }
            if not args.no_legacy:
                runners["legacy-sdk"] = lambda tag, nc, s=source, c=ctx: run_legacy(engine, s, c, tag, nc)
            order = list(runners)
            if args.warm_only:
                for who in order:
                    runners[who](f"bench-{name}-{who}:1", False)
            for rnd in range(args.rounds):
                rot = order[rnd % len(order):] + order[: rnd % len(order)]
                for who in rot:
                    tag = f"bench-{name}-{who}:1"
                    if not args.warm_only:
                        cold = runners[who](tag, True)
                        results.setdefault((name, who, "cold"), []).append(cold)
                    warm = runners[who](tag, False)
                    results.setdefault((name, who, "warm"), []).append(warm)
                    first = f"cold {cold:7.3f} s  " if not args.warm_only else ""
                    print(f"  round {rnd + 1} {name:5s} {who:13s} {first}warm {warm:7.3f} s", flush=True)
            shutil.rmtree(ctx, ignore_errors=True)
        print()
        cols = ("nbops", "nbops-noreuse", "buildkit-cli", "legacy-sdk")
        print(f"{'image':6s} {'phase':5s} " + " ".join(f"{w:>13s}" for w in cols)
              + "   nbops/fastest  noreuse/fastest")
        worst = 0.0
        for name in ("small", "big"):
            for phase in ("cold", "warm"):
                med = {w: statistics.median(results[(name, w, phase)]) for w in cols if (name, w, phase) in results}
                if not med:
                    continue
                fastest = min(v for w, v in med.items() if not w.startswith("nbops"))  # the baselines
                ratio = med["nbops"] / fastest
                worst = max(worst, ratio)
                cells = " ".join(f"{med[w]:11.3f} s" if w in med else f"{'-':>13s}" for w in cols)
                print(f"{name:6s} {phase:5s} {cells}   {ratio:12.3f}x  {med['nbops-noreuse'] / fastest:14.3f}x")
        print(f"\nworst nbops ratio to the fastest baseline: {worst:.3f}x (target <= 1.05x)")
        print("warm builds answered by reuse (inputs unchanged, image present; no builder started): "
              + ", ".join(f"{w} {REUSED.get(w, 0)}" for w in ("nbops", "nbops-noreuse")))
    finally:
        for (name, who, _), _v in list(results.items()):
            try:
                engine.client.images.remove(f"bench-{name}-{who}:1", force=True)
            except Exception:
                pass
        history.close()
        if lab is not None:
            lab.down(quiet=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

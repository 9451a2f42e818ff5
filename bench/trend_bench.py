"""Trend query over 10,000 recorded builds x 5 layers: nbops.layers.trend vs plain reads of the store.

    .venv/bin/python bench/trend_bench.py [--builds 10000] [--reps 7]

No lab needed: it writes a synthetic history store (every build analysed; layers 0-2 shared by all
builds, layer 3 changing every 100 builds, layer 4 new in every build, like an app on a base image),
then times, alternately in each repetition: a plain ``SELECT * FROM builds`` (fetchall), the
``History.builds()`` frame, ``layers.trend(name)`` and the previous implementation of the trend (one
joined query, version labels in a Python loop; kept in tests/unit/test_layers_unit.py as the
reference the fast path must equal). Prints medians (wall and CPU time of this process: the machine
is shared, so CPU time shows what contention hides) and the ratios to the issue's 0.2 s target and
to the plain read of the builds table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 0.2


def make_store(path: Path, n: int = 10_000):
    """A history store with n analysed builds of "app", 5 layers each."""
    from nbops.history import History

    store = History(path)
    rnd = random.Random(1)
    base = [(f"sha256:{i:064x}", ins) for i, ins in enumerate(("ADD rootfs.tar /", "RUN apk add python3",
                                                                 "WORKDIR /app"))]
    with store.transaction() as c:
        for b in range(n):
            image_id = f"sha256:{10**9 + b:064x}"
            c.execute("INSERT INTO builds (ts, name, tags, image_id, size, ok) VALUES (?,?,?,?,?,1)",
                      (1.7e9 + 60 * b, "app", f'["app:1.{b}", "app:latest"]', image_id, 0))
            aid = c.execute("INSERT INTO layer_analyses (ts, image, image_id, n_layers) VALUES (?,?,?,5)",
                            (1.7e9 + 60 * b + 1, f"app:1.{b}", image_id)).lastrowid
            ls = [*base, (f"sha256:{2 * 10**9 + b // 100:064x}", "COPY requirements.txt ."),
                  (f"sha256:{3 * 10**9 + b:064x}", "COPY . .")]
            c.executemany("INSERT INTO analysis_layers (analysis_id, idx, diff_id, instruction, size)"
                          " VALUES (?,?,?,?,?)",
                          [(aid, i, d, ins, rnd.randint(1, 10**7)) for i, (d, ins) in enumerate(ls)])
    return store


def timed(fn) -> tuple[float, float, object]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def run(tmp: Path, n: int = 10_000, reps: int = 7) -> dict[str, float]:
    import pandas as pd  # noqa: F401 - imported before any timing

    from nbops import layers

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_layers_unit import _slow_trend

    t = time.perf_counter()
    store = make_store(tmp / "trend-query.sqlite", n)
    print(f"== trend query over {n:,} recorded builds x 5 layers (store written in {time.perf_counter() - t:.1f}s)",
          flush=True)
    conn = store.connect()
    cold_wall, cold_cpu, df = timed(lambda: layers.trend("app", history=store, analyze_missing=False))
    contenders = {
        "SELECT * FROM builds": lambda: conn.execute("SELECT * FROM builds").fetchall(),
        "History.builds()": lambda: store.builds("app"),
        "layers.trend": lambda: layers.trend("app", history=store, analyze_missing=False),
        "previous trend": lambda: _slow_trend(store, "app"),
    }
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):  # alternate, so drift hits every contender alike
        for k, fn in contenders.items():
            w, c, _ = timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    medc = {k: statistics.median(v) for k, v in cpu.items()}
    for k in contenders:
        print(f"   {k:22s} median of {reps}: {med[k]:.3f}s wall, {medc[k]:.3f}s CPU")
    tr, base = med["layers.trend"], med["SELECT * FROM builds"]
    print(f"   layers.trend first call on a fresh connection: {cold_wall:.3f}s wall, {cold_cpu:.3f}s CPU "
          f"({len(df):,} rows)")
    print(f"   layers.trend / 0.2s target = {tr / TARGET_S:.2f} (wall), {medc['layers.trend'] / TARGET_S:.2f} (CPU)"
          "   (target < 1)")
    print(f"   layers.trend / SELECT * FROM builds = {tr / base:.2f} (wall), "
          f"{medc['layers.trend'] / medc['SELECT * FROM builds']:.2f} (CPU)")
    print(f"   layers.trend / History.builds() = {tr / med['History.builds()']:.2f} (wall)")
    print(f"   layers.trend / previous trend = {tr / med['previous trend']:.3f} (wall)")
    return {"trend": tr, "select": base, "target_ratio": tr / TARGET_S}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbt-", dir="/tmp") as tmp:
        run(Path(tmp), args.builds, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

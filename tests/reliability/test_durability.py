"""The history store under kill -9 and concurrent writers: integrity ok, no reported row lost,
no half-written build (a builds row always has all its steps)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

STEPS = 5
WRITER = f"""
import sys, time
from nbops.history import History
h = History(sys.argv[1])
tag, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    rid = h.record("builds", {{"ts": time.time(), "name": tag, "tags": [f"{{tag}}:{{i}}"], "ok": True,
                              "meta": {{"pad": "x" * 2000}}}},
                   {{"build_steps": [{{"step": k, "instruction": f"RUN step {{k}}", "duration_s": 0.1}}
                                    for k in range({STEPS})]}})
    print(rid, flush=True)  # reported only after the transaction committed
"""


def _writer(db, tag, n):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, str(n)], stdout=subprocess.PIPE, text=True)


def _check_store(db, reported: set[int]) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        ids = {r[0] for r in conn.execute("SELECT id FROM builds")}
        lost = reported - ids
        assert not lost, f"{len(lost)} builds reported as recorded are missing: {sorted(lost)[:10]}"
        partial = conn.execute(
            "SELECT b.id, COUNT(s.step) FROM builds b LEFT JOIN build_steps s ON s.build_id=b.id "
            "GROUP BY b.id HAVING COUNT(s.step) != ?", (STEPS,)).fetchall()
        assert partial == [], f"half-written builds: {partial[:10]}"
        orphans = conn.execute("SELECT COUNT(*) FROM build_steps WHERE build_id NOT IN (SELECT id FROM builds)").fetchone()[0]
        assert orphans == 0
        return {"written": len(ids), "lost": len(lost)}
    finally:
        conn.close()


@pytest.mark.parametrize("round_", range(8))
def test_kill_9_mid_write(tmp_path_factory, round_, figures):
    db = tmp_path_factory.getbasetemp() / "kill9.sqlite"  # the same store across rounds: damage accumulates
    proc = _writer(db, f"k{round_}", 100000)
    reported: set[int] = set()
    assert proc.stdout is not None
    deadline = time.monotonic() + 30 + round_ * 0.37
    # let it commit for a random-ish while, then kill it wherever it is
    while time.monotonic() < deadline and len(reported) < 150 + 97 * round_:
        line = proc.stdout.readline()
        if not line:
            break
        reported.add(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    reported |= {int(x) for x in rest.split()}
    assert proc.returncode == -signal.SIGKILL
    assert reported, "the writer never committed"
    counts = _check_store(db, reported)
    figures.add("durability", written=len(reported), lost=counts["lost"])
    figures.add("faults", injected=1, survived=1)


def test_four_concurrent_writers(tmp_path, figures):
    db = tmp_path / "concurrent.sqlite"
    procs = [_writer(db, f"w{i}", 300) for i in range(4)]
    reported: set[int] = set()
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        ids = [int(x) for x in out.split()]
        assert len(ids) == 300
        reported |= set(ids)
    assert len(reported) == 1200  # no two writers were handed the same id
    counts = _check_store(db, reported)
    assert counts["written"] == 1200
    figures.add("durability", written=len(reported), lost=counts["lost"])

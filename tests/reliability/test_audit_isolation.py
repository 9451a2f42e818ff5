"""The secret scan reads a live history store without damaging it.

Reading a SQLite store's files in a process that has the store open drops that process's POSIX locks
(closing any descriptor of a file does), so another process can checkpoint and reset the WAL under the
open connection: committed rows vanish (sqlite.org/howtocorrupt.html §2.2). That is how the test
suite's shared store once became "malformed". ``nbops.audit.scan`` therefore reads in a child process;
the control below shows the damage the in-process read does on this machine's SQLite.
"""

from __future__ import annotations

import subprocess
import sys

from nbops.audit import scan
from nbops.history import History

SECRET = "never-there-4f1c"
OTHER = """
import sys
from nbops.history import History
h = History(sys.argv[1])
for i in range(100):
    h.record("builds", {"ts": 1.0, "name": "other", "ok": True})
h.close()
"""


def _rounds(tmp_path, isolate: bool) -> tuple[int, int, str]:
    store = History(tmp_path / "h.sqlite")
    expected = 0
    for _ in range(10):
        for _ in range(100):
            store.record("builds", {"ts": 1.0, "name": "self", "ok": True})
        expected += 100
        result = scan(tmp_path, SECRET, isolate=isolate)  # reads h.sqlite, -wal and -shm
        assert result.clean
        # while this process's connection holds its locks, no other process may remove the WAL
        assert not isolate or result.files == 3
        subprocess.run([sys.executable, "-c", OTHER, str(store.path)], check=True, timeout=120)
        expected += 100
    got = store.execute("SELECT COUNT(*) FROM builds")[0][0]
    check = store.execute("PRAGMA integrity_check")[0][0]
    store.close()
    fresh = History(tmp_path / "h.sqlite")
    try:
        after = fresh.execute("SELECT COUNT(*) FROM builds")[0][0]
    finally:
        fresh.close()
    return expected, min(got, after), check


def test_isolated_scan_keeps_every_row(tmp_path):
    expected, got, check = _rounds(tmp_path, isolate=True)
    assert check == "ok" and got == expected == 2000


def test_in_process_read_loses_rows_control(tmp_path):
    expected, got, _check = _rounds(tmp_path, isolate=False)
    assert got < expected, "the in-process read did no damage here: the isolation test above proves nothing"

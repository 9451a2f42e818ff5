"""Run the reliability suite (``pytest -m reliability tests/reliability``) and print its table:
faults injected / survived, bad inputs tried / handled, secrets scanned / leaked, rows written / lost,
load held, with the load's throughput against a sequential baseline measured in the same run.

    .venv/bin/python bench/reliability.py [--quick] [-- extra pytest args]

``--quick`` skips the engine tests (no lab): audit, bad input and durability only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no engine tests (no lab is started)")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    report = Path(tempfile.mkdtemp(prefix="nbops-rel-")) / "reliability.jsonl"
    env = {**os.environ, "NBOPS_RELIABILITY_REPORT": str(report)}
    marker = "reliability and not engine" if args.quick else "reliability"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "reliability"), "-m", marker, "-q",
           "-p", "no:cacheprovider", *args.pytest_args]
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    spec = importlib.util.spec_from_file_location("rel_conftest", ROOT / "tests" / "reliability" / "conftest.py")
    assert spec and spec.loader
    os.environ.setdefault("NBOPS_HOME", str(report.parent))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    print(f"\nnbops reliability ({'quick' if args.quick else 'full'}; pytest exit {rc}; {time.monotonic() - t0:.0f} s)")
    print(conf.table(conf.summarize(report)))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

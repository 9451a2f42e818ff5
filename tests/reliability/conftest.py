"""Reliability suite: faults, bad input, secrets, durability, load — each test adds its figures.

Figures go to ``$NBOPS_RELIABILITY_REPORT`` (JSON lines; default a file in the test home) and the
table is printed at the end of the run (``bench/reliability.py`` runs the suite and prints it too).
Engine tests start their OWN lab per module (a destructive fault must not break another test).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("NBOPS_RELIABILITY_REPORT") or Path(os.environ["NBOPS_HOME"]) / "reliability.jsonl")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


class Figures:
    """Counters one test adds to: ``figures.add("faults", injected=1, survived=1)``."""

    def add(self, area: str, **counts: float) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        with open(REPORT, "a") as fh:
            fh.write(json.dumps({"area": area, **counts}) + "\n")


@pytest.fixture
def figures() -> Figures:
    return Figures()


def summarize(path: Path = REPORT) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        rec = json.loads(line)
        area = rec.pop("area")
        for k, v in rec.items():
            if isinstance(v, (int, float)):
                if k.startswith("max_"):
                    totals[area][k] = max(totals[area][k], v)
                else:
                    totals[area][k] += v
    return {a: dict(v) for a, v in totals.items()}


TABLE_ROWS = [
    ("faults", "faults injected / survived", "injected", "survived"),
    ("bad_input", "bad inputs tried / handled", "tried", "handled"),
    ("secrets", "files scanned for the secrets / hits (leaks)", "files", "leaked"),
    ("durability", "rows written / lost", "written", "lost"),
    ("load", "load calls / held (completed or failed clearly)", "calls", "held"),
]


def table(totals: dict[str, dict[str, float]]) -> str:
    lines = [f"{'area':<11} {'what':<48} {'a':>8} {'b':>8}", "-" * 78]
    for area, what, a, b in TABLE_ROWS:
        t = totals.get(area, {})
        lines.append(f"{area:<11} {what:<48} {t.get(a, 0):>8.0f} {t.get(b, 0):>8.0f}")
    faults = totals.get("faults", {})
    if faults.get("during_deploy"):
        lines.append(f"faults: {faults['during_deploy']:.0f} of them during a rolling update (a worker crashed, the "
                     f"manager restarted or gone), each recorded as the manager reports it afterwards")
    if faults.get("during_push") or faults.get("during_build"):
        lines.append(f"faults: {faults.get('during_push', 0):.0f} during a push (registry slow, stalled for good, "
                     f"push interrupted), {faults.get('during_build', 0):.0f} during a build (engine hung mid-build, "
                     f"silent step on a healthy engine)")
    load = totals.get("load", {})
    if load:
        lines.append(f"load: {load.get('ok', 0):.0f} ok, {load.get('failed_clearly', 0):.0f} failed clearly, "
                     f"{load.get('hung', 0):.0f} hung; slowest call {load.get('max_slowest_s', 0):.1f} s; "
                     f"builds {load.get('builds_per_min', 0):.1f}/min (×{load.get('max_speedup', 0):.2f} vs the same builds one "
                     f"after the other), containers {load.get('max_containers', 0):.0f} running, "
                     f"{load.get('containers_per_min', 0):.1f}/min")
        if load.get("max_all_running_s"):
            cli = load.get("max_cli_all_running_s")
            lines.append(f"load: all containers running {load['max_all_running_s']:.1f} s after the deploys began"
                         + (f" (docker CLI, same services: {cli:.1f} s, nbops/CLI ×{load['max_all_running_s'] / cli:.2f})"
                            if cli else "") + f"; load average up to {load.get('max_load', 0):.1f}")
    return "\n".join(lines)


_FINAL: dict[str, dict[str, float]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    # read the figures before tests/conftest.py removes $NBOPS_HOME (the default report lives there)
    _FINAL.update(summarize())


def pytest_terminal_summary(terminalreporter):
    totals = _FINAL or summarize()
    if totals:
        terminalreporter.write_sep("=", "nbops reliability")
        terminalreporter.write_line(table(totals))


# -- a lab of the module's own ------------------------------------------------------------------------
def start_lab(**kw):
    from nbops.lab import Lab

    lab = Lab(Path(tempfile.mkdtemp(prefix="nbr-", dir="/tmp")) / "lab")
    try:
        lab.up(**kw)
    except BaseException:
        lab.down(quiet=True)
        shutil.rmtree(lab.dir.parent, ignore_errors=True)
        raise
    return lab


def stop_lab(lab) -> None:
    import signal

    st = lab.state()
    for n in (st.nodes if st else []):  # a stopped engine must be woken before it can stop
        try:
            os.kill(n.dockerd_pid, signal.SIGCONT)
        except (ProcessLookupError, TypeError):
            pass
    lab.down(quiet=True)
    left = {k: v for k, v in lab.leftovers().items() if v}
    assert not left, f"lab leftovers: {left}"
    if lab.dir.parent.name.startswith("nbr-"):  # the directory start_lab made for it
        shutil.rmtree(lab.dir.parent, ignore_errors=True)


def wait_until(pred, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def pids_with(text: str) -> list[int]:
    """Processes (not Python ones) whose command line contains ``text``: e.g. a build's ``sleep N`` step."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and "python" not in cmd:
                out.append(int(entry))
    return out


@pytest.fixture(scope="session")
def helpers():
    """start_lab / stop_lab / wait_until / pids_with for test modules (importlib mode: no sibling imports)."""
    from types import SimpleNamespace

    return SimpleNamespace(start_lab=start_lab, stop_lab=stop_lab, wait_until=wait_until, pids_with=pids_with)

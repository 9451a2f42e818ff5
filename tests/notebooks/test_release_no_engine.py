"""Binder has no Docker engine: the notebooks say so in one line and still run their analysis cells on
the recorded lab history (notebooks/data/lab-history.sqlite). DOCKER_HOST points at a missing socket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
import pytest

from nbops import runbook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MISSING = "unix:///nonexistent/nbops-test/docker.sock"


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", MISSING)


def outputs(cell) -> tuple[str, int]:
    text = "".join(o.get("text", "") for o in cell.get("outputs", []))
    pngs = sum(1 for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))
    return text, pngs


def engine_lines(nb) -> list[str]:
    return [line for c in nb.cells if c.cell_type == "code" for line in outputs(c)[0].splitlines()
            if "No Docker engine" in line]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trends_without_engine_analyses_recorded_history(tmp_path, history, no_engine):
    recorded = NOTEBOOKS / "data" / "lab-history.sqlite"
    before = digest(recorded)
    res = runbook.run(NOTEBOOKS / "trends.ipynb", {}, out=tmp_path, history=history, echo=None)
    assert res.ok, res.one_line()
    assert digest(recorded) == before  # the shipped dataset is read through a copy, never migrated in place
    nb = nbformat.read(res.output, as_version=4)
    lines = engine_lines(nb)
    assert lines == [f"No Docker engine at {MISSING}: analysing the recorded lab history data/lab-history.sqlite."]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.outputs) for c in code)
    assert sum(outputs(c)[1] for c in code) >= 4  # size, layers, build time, pushes/deploys plots
    text = "".join(outputs(c)[0] for c in code)
    assert "builds of" in text and "focus: app" in text


def test_release_without_engine_skips_release_and_shows_recorded_summary(tmp_path, history, no_engine):
    res = runbook.run(NOTEBOOKS / "release.ipynb", {"tag": "v9.9.9"}, out=tmp_path, history=history, echo=None)
    assert not res.ok and res.failed_cell is not None and res.failed_cell.id == "release-23"
    assert res.error == "RuntimeError: no Docker engine: nothing was released"
    nb = nbformat.read(res.output, as_version=4)
    assert len(engine_lines(nb)) == 1 and engine_lines(nb)[0].startswith(f"No Docker engine at {MISSING}: release steps skipped")
    summary = next(c for c in nb.cells if c.id == "release-22")
    assert outputs(summary)[1] == 1  # the summary figure, drawn from the recorded releases
    assert history.execute("SELECT count(*) FROM builds")[0][0] == 0  # nothing was built

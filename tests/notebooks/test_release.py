"""notebooks/release.ipynb end to end on the real lab: a healthy release, then an unhealthy one that
rolls back automatically — each executed through `nbops run` (papermill, a real kernel)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from nbops import runbook

RELEASE = Path(__file__).resolve().parents[2] / "notebooks" / "release.ipynb"
pytestmark = pytest.mark.engine


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def app_repo(tmp_path):
    """A git repository of a tiny web app with two tags."""
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@nbops.invalid")
    git(repo, "config", "user.name", "test")
    for tag in ("v1.0.0", "v2.0.0"):
        (repo / "index.html").write_text(f"<h1>app {tag}</h1>\n")
        git(repo, "add", "index.html")
        git(repo, "commit", "-q", "-m", tag)
        git(repo, "tag", tag)
    (repo / "index.html").write_text("<h1>untagged work in progress</h1>\n")
    return repo


def images_of(path: str) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [c.id for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def service_image(engine, name: str) -> str:
    return engine.client.services.get(name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def test_release_healthy_then_unhealthy_rolls_back(tmp_path, app_repo, engine, history):
    from nbops.deploy.swarm import remove

    app = "rel-test"
    try:
        ok = runbook.run(RELEASE, {"tag": "v1.0.0", "source": str(app_repo), "app": app, "replicas": 2},
                         out=tmp_path, history=history, echo=print)
        assert ok.ok, ok.one_line()
        assert "release-22" in images_of(ok.output)  # the summary cell drew its plots
        push = history.frame("SELECT ref, digest FROM pushes WHERE run_id=? AND ok=1", (ok.run_id,))
        assert len(push) == 1 and push["ref"][0].endswith(f"/{app}:v1.0.0")
        v1 = f"{push['ref'][0].rsplit(':', 1)[0]}@{push['digest'][0]}"
        assert service_image(engine, app) == v1
        deploys = history.frame("SELECT outcome, replicas FROM deploys WHERE run_id=?", (ok.run_id,))
        assert list(deploys["outcome"]) == ["healthy"] and deploys["replicas"][0] == 2
        summary = runbook.runs(history=history).to_frame().set_index("id").loc[ok.run_id, "summary"]
        assert f"built {app}:v1.0.0" in summary and "pushed" in summary and f"deployed {app} healthy" in summary
        record = nbformat.read(ok.output, as_version=4)
        verify = next(c for c in record.cells if c.id == "release-20")
        assert "app v1.0.0" in json.dumps(verify.outputs)  # every task served the tagged page

        bad = runbook.run(RELEASE, {"tag": "v2.0.0", "source": str(app_repo), "app": app, "replicas": 2,
                                    "break_health": True, "deploy_timeout": 15.0},
                          out=tmp_path, history=history, echo=print)
        assert not bad.ok
        assert bad.failed_cell is not None and bad.failed_cell.id == "release-23"
        assert f"release v2.0.0 was unhealthy: {app} rolled back to {v1}" in bad.error
        assert "release-22" in images_of(bad.output)  # the summary still ran before the run failed
        outcomes = history.frame("SELECT image, outcome FROM deploys WHERE run_id=? ORDER BY ts", (bad.run_id,))
        assert len(outcomes) == 2 and outcomes["outcome"][0] != "healthy" and outcomes["outcome"][1] == "healthy"
        assert outcomes["image"][1] == v1 and "v2.0.0" not in outcomes["image"][1]
        assert service_image(engine, app) == v1  # rolled back
        tasks = engine.api.tasks(filters={"service": app, "desired-state": "running"})
        assert len(tasks) == 2 and all(t["Spec"]["ContainerSpec"]["Image"] == v1 for t in tasks)

        # --resume: build, push and deploy are not re-run; the state cells restore what the failed
        # cell needs (the rollout outcome) from the history store, so it fails again the same way
        again = runbook.run(None, {}, resume=bad.run_id, out=tmp_path, history=history, echo=print)
        assert not again.ok and again.failed_cell.id == "release-23" and again.error == bad.error
        skipped = {r.id for r in again.skipped}
        assert {"release-09", "release-14", "release-17", "release-20", "release-22"} <= skipped
        assert not skipped & {"release-01", "release-02", "release-10", "release-15", "release-18"}
        for table in ("builds", "pushes", "deploys"):
            assert history.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (again.run_id,))[0][0] == 0
        assert runbook.get_run(again.run_id, history=history)["resumed_from"] == bad.run_id
    finally:
        remove(app, engine=engine)

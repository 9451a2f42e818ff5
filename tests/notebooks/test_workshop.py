"""notebooks/workshop/, executed headless with papermill against a real lab of their own.

Each notebook runs with NBOPS_HOME pointing at a temporary home, so `%nbops lab up --nodes 3` there
starts a separate 3-node lab (the session's 1-node lab is left alone); the test takes it down.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_home(monkeypatch):
    from nbops.lab import Lab

    home = Path(tempfile.mkdtemp(prefix="nbw-", dir="/tmp"))
    monkeypatch.setenv("NBOPS_HOME", str(home))
    monkeypatch.setenv("NBOPS_HISTORY", str(home / "history.sqlite"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    yield home
    lab = Lab(home / "lab")
    lab.down()
    assert not any(lab.leftovers().values()), lab.leftovers()
    shutil.rmtree(home, ignore_errors=True)


def _outputs(nb: dict) -> str:
    return "\n".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                     for c in nb["cells"] for o in c.get("outputs", []))


def test_workshop_05_swarm_on_three_nodes(own_home, tmp_path):
    import papermill as pm

    out = tmp_path / "05.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "workshop" / "05-swarm-on-three-nodes.ipynb"), str(out),
                        kernel_name="python3", parameters={"out_dir": str(tmp_path)}, progress_bar=False,
                        cwd=str(tmp_path), execution_timeout=300)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    text = _outputs(nb)
    # every cell ran, including the asserts the notebook makes itself (3 replicas on 3 distinct nodes)
    assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    assert text.count("healthy") >= 3
    assert text.count("shop release 2") >= 3            # the rolling update reached every task
    assert "rollback_completed" in text                  # the broken release was rolled back
    assert "stop node3: dockerd killed" in text          # the crash fault ran through the magic
    assert (tmp_path / "updates.png").stat().st_size > 10_000


def test_workshop_04_deploy_with_healthcheck(lab, tmp_path):
    """Runs on the session's 1-node lab (`%nbops lab up` in the notebook reuses it)."""
    import papermill as pm

    out = tmp_path / "04.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "workshop" / "04-deploy-with-healthcheck.ipynb"), str(out),
                        kernel_name="python3", parameters={"out_dir": str(tmp_path), "name": "ws4-health"},
                        progress_bar=False, cwd=str(tmp_path), execution_timeout=300)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    text = _outputs(nb)
    assert "starting" in text and "healthy" in text and "unhealthy" in text
    assert "ready and healthy" in text                     # the page, served once healthy
    assert "<DeployResult ws4-health healthy: 1/1 tasks running" in text

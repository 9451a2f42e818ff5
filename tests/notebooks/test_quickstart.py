"""notebooks/00-quickstart.ipynb, executed headless with papermill against the real lab."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_end_to_end(lab, tmp_path):
    import papermill as pm

    out = tmp_path / "quickstart.ipynb"
    service = f"qs-{uuid.uuid4().hex[:8]}"
    pm.execute_notebook(str(ROOT / "notebooks" / "00-quickstart.ipynb"), str(out), kernel_name="python3",
                        parameters={"out_dir": str(tmp_path), "service": service, "tag": service},
                        progress_bar=False, cwd=str(tmp_path))
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "\n".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                     for c in nb["cells"] for o in c.get("outputs", []))
    assert "<BuildResult hello:" in text and "via buildkit" in text
    assert "verified" in text
    assert f"<DeployResult {service} healthy: 2/2 tasks running" in text
    for png in ("build-profile.png", "rollout-timeline.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    # progress is text in batch runs, never a frozen widget
    assert "widget-view" not in out.read_text()

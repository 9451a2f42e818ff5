"""notebooks/workshop/, executed headless with papermill against a real lab of their own.

Each notebook runs with NBOPS_HOME pointing at a temporary home, so `%nbops lab up --nodes 3` there
starts a separate 3-node lab (the session's 1-node lab is left alone); the test takes it down.
"""

from __future__ import annotations

import json
import re
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


def _run_on_session_lab(filename: str, tmp_path: Path, **parameters) -> tuple[dict, str]:
    """Execute one workshop notebook headless against the session lab; no cell may fail."""
    import papermill as pm

    out = tmp_path / filename
    pm.execute_notebook(str(ROOT / "notebooks" / "workshop" / filename), str(out), kernel_name="python3",
                        parameters={"out_dir": str(tmp_path), **parameters}, progress_bar=False,
                        cwd=str(tmp_path), execution_timeout=300)
    nb = json.loads(out.read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert all(c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    return nb, _outputs(nb)


def _cell_output(nb: dict, source_start: str) -> str:
    """The outputs of the first code cell whose source starts with ``source_start``."""
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(source_start))
    return _outputs({"cells": [cell]})


def _plain(nb: dict, source_start: str) -> str:
    """What the first code cell starting with ``source_start`` printed and returned, as plain text."""
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(source_start))
    return "\n".join("".join(o.get("text") or o.get("data", {}).get("text/plain", "")) for o in cell["outputs"])


def _cached_column(text: str) -> list[str]:
    """The `cached` value of each WORKDIR / RUN row of a printed profile frame."""
    return [m.group(1) for m in re.finditer(r"^\s*\d+\s+\d+\s+(?:WORKDIR|RUN) .*?\s(True|False|None)\b",
                                            text, re.MULTILINE)]


def test_workshop_01_containerize_and_build(lab, tmp_path):
    nb, text = _run_on_session_lab("01-containerize-and-build.ipynb", tmp_path, name="ws1-build")
    draft = _cell_output(nb, "%%dockerfile app\nFROM nbops/busybox\nWORKDIR /app\nRUN cd")
    fixed = _cell_output(nb, "%%dockerfile app\nFROM nbops/busybox\nWORKDIR /app\nRUN dd")
    assert "DL3003" in draft and "DL3025" in draft and "NB006" in draft      # the lint table of the draft
    assert "DL3003" not in fixed and "DL3025" not in fixed and "NB006" in fixed
    first = _cell_output(nb, "first = %build")
    image_id = re.search(r"<BuildResult ws1-build:1 (\w{12}) ", first).group(1)
    # the profiles: WORKDIR and both RUNs run under --no-cache, all three come from the cache on rebuild
    assert _cached_column(_plain(nb, "assert not any(s.cached for s in first")) == ["False"] * 3
    again = _cell_output(nb, "again = %build")
    assert f"<BuildResult ws1-build:1 {image_id} " in again and _cached_column(_plain(nb, "again = %build")) == ["True"] * 3
    # the build arg only invalidates what comes after its ARG
    assert "RUN steps cached: {'dd': True, 'echo': False}" in _cell_output(nb, "french = %build")
    assert "hello from the workshop" in text and "bonjour from the workshop" in text
    assert (tmp_path / "build-profile.png").stat().st_size > 10_000


def test_workshop_02_layers_and_squashing(lab, tmp_path):
    nb, text = _run_on_session_lab("02-layers-and-squashing.ipynb", tmp_path, name="ws2-layers")
    wasted = _cell_output(nb, "print(f'dive:")
    assert "dive: efficiency" in wasted and "truly hidden: " in wasted
    assert "/big.bin" in wasted and "/cache.tmp" in wasted and "/version.txt" in wasted
    assert "RUN rm /big.bin /cache.tmp" in wasted and "RUN dd if=/dev/zero of=/big.bin" in wasted
    squashed = _cell_output(nb, "flat = %build")
    assert "SquashResult" in squashed and "base layers kept" in squashed
    assert "hidden 0 B" in _cell_output(nb, "rep_flat = %layers")
    d = _cell_output(nb, "print(d.summary())")
    assert "/version.txt" in d and "changed" in d and "'shared_layers'" in d
    assert "version 1 (final)" in text


def test_workshop_03_registry_and_naming(lab, tmp_path):
    nb, text = _run_on_session_lab("03-registry-and-naming.ipynb", tmp_path, name="ws3-reg",
                                   work_dir=str(tmp_path / "git"))
    assert "<PushResult " in text and " verified;" in text
    assert "ws3-reg" in _cell_output(nb, "repos = %nbops registry repos")
    assert "1.0.0" in _cell_output(nb, "%nbops registry tags")
    assert "/workshop/ws3-reg:v1.2.0" in _cell_output(nb, "%config NbopsMagics.name_template")
    dirty_clean = _cell_output(nb, "git('tag', 'v1.2.1')")
    assert "clean :" in dirty_clean and dirty_clean.count("/workshop/ws3-reg:") == 2 and ":v1.2.1" in dirty_clean
    refusal = _cell_output(nb, "from IPython.core.error import UsageError")
    assert "UsageError:" in refusal and "protected registry" in refusal and "latest" in refusal
    assert "Traceback" not in refusal
    pulled = _cell_output(nb, "from nbops.engine import Engine")
    assert re.search(r"<PullResult \S+/ws3-reg:1.0.0 sha256:\w{64} verified; \d+/3 layers pulled", pulled)
    assert "True True" in _cell_output(nb, "print(pulled.digest")             # same digest, same image id
    assert "<ArchiveResult export ws3-reg:1.0.0" in text and "<ArchiveResult load ws3-reg:1.0.0" in text
    assert (tmp_path / "ws3-reg.tar.gz.sha256").is_file()

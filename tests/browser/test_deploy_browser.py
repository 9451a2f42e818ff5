"""JupyterLab in headless Chromium: the pickers render, a pick reaches the kernel, a deploy run from the
browser completes. Uses Debian's chromium (never `playwright install`); skipped when it is missing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOT = Path(__file__).parents[2] / "docs" / "img" / "browser-deploy.png"
PUSH_SHOT = SHOT.with_name("browser-push-progress.png")

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _requirements() -> str | None:
    if not os.path.exists(CHROMIUM):
        return "Debian's chromium is not installed (apt-get install -y chromium chromium-driver)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright — never `playwright install`)"
    if not shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)):
        return "jupyterlab is not installed in this environment"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(image: str) -> dict:
    cells = [
        "%load_ext nbops\nfrom nbops.widgets import NodePicker, OrchestratorPicker\n"
        "picker = NodePicker()\norch = OrchestratorPicker()\norch.value = 'engine'\ndisplay(picker, orch)",
        "print('PICKED', picker.value, orch.value)",
        f"r = %deploy {image} --name bweb --replicas 2 -p 8080 --init --probe --from picker --from orch "
        "--update parallelism=1,monitor=2s,order=start-first\n"
        "print('DEPLOYED', r.outcome, len(r.tasks), r.orchestrator, r.probe.summary())",
        # progress "auto" (the server runs with NBOPS_PROGRESS=text): JupyterLab draws widgets, so widget
        "import os\nos.environ.pop('NBOPS_PROGRESS', None)\nfrom nbops import progress\nprint('MODE', progress.mode())",
        # so a push shows its per-layer widget rows
        f"p = %push {image} --to {image.split('/nbt/')[0]}/nbt/webcopy:b1\nprint('PUSHED', p.verified, len(p.layers))",
    ]
    return {"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                      for c in cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def jupyter(tmp_path, lab):
    why = _requirements()
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser proof: {why}")  # `make test` installs chromium
    if why:
        pytest.skip(why)
    port, token = _free_port(), "nbops-test-token"
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "NBOPS_PROGRESS": "text"}
    root = tmp_path / "nb"
    root.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", f"--port={port}",
                             f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1", "--allow-root",
                             f"--ServerApp.root_dir={root}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "jupyter.log", "wb"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "jupyter.log").read_text()[-2000:])
    yield base, token, root
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_pickers_and_deploy_from_the_browser(jupyter, engine, lab):
    sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
    from deploy_images import build_web
    from playwright.sync_api import sync_playwright

    from nbops.deploy import engine as engine_backend

    base, token, root = jupyter
    image = build_web(engine, lab.status().registry, "v1")
    engine_backend.remove("bweb", engine=engine)
    (root / "deploy.ipynb").write_text(json.dumps(_notebook(image)))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{base}/lab/tree/deploy.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_selector(".jp-StatusBar-TextItem:has-text('Idle')", timeout=60_000)
            cells = page.locator(".jp-Notebook .jp-Cell")
            cells.nth(0).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            # the widgets render: the nodes table, the node multi-select, the orchestrator dropdown
            page.wait_for_selector(".nbops-node-picker select", timeout=60_000)
            assert "node1" in page.locator("table.nbops-nodes").inner_text()
            # pick in the browser: node1 and the swarm orchestrator
            # ipywidgets renders option labels, not values
            page.locator(".nbops-node-picker select").select_option(index=[0])
            page.locator(".nbops-orchestrator-picker select").select_option(label="swarm")
            page.wait_for_selector(".nbops-orchestrator-help:has-text('swarm')", timeout=10_000)
            cells.nth(1).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".jp-OutputArea-output:has-text('PICKED')", timeout=30_000)
            picked = cells.nth(1).locator(".jp-OutputArea-output").inner_text()
            assert "('node1',) swarm" in picked, picked
            # the deploy runs in the kernel and completes
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".jp-OutputArea-output:has-text('DEPLOYED')", timeout=150_000)
            out = cells.nth(2).locator(".jp-OutputArea-output").last.inner_text()
            assert "DEPLOYED healthy 2 swarm" in out, out
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT), full_page=True)
            cells.nth(3).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".jp-OutputArea-output:has-text('MODE')", timeout=30_000)
            mode = cells.nth(3).locator(".jp-OutputArea-output").last.inner_text()
            assert mode.strip() == "MODE widget", mode
            cells.nth(4).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".jp-OutputArea-output:has-text('PUSHED')", timeout=60_000)
            pushed = cells.nth(4).locator(".jp-OutputArea-output").last.inner_text()
            assert pushed.startswith("PUSHED True"), pushed
            n_layers = int(pushed.split()[-1])
            # one progress bar per layer, each row's label in a final state, and the summary header
            bars = cells.nth(4).locator(".widget-hprogress")
            assert bars.count() == n_layers, bars.count()
            labels = cells.nth(4).locator(".widget-label").all_inner_texts()
            assert sum(t.startswith(("pushed ", "mounted ", "already exists")) for t in labels) == n_layers, labels
            assert any("webcopy:b1" in t for t in labels), labels
            cells.nth(4).scroll_into_view_if_needed()
            page.screenshot(path=str(PUSH_SHOT), full_page=True)
            browser.close()
    finally:
        from nbops.deploy import swarm

        swarm.remove("bweb", engine=engine)

"""%push in a real kernel with widget progress: one IntProgress + Label row per layer, saved as widget state."""

from __future__ import annotations

import io
import uuid

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _push_in_a_kernel(engine, lab, tmp_path, prefix: str, size: int, cells: list[str]):
    """Build a fresh image with a ``size``-byte layer, run ``cells`` (``{tag}``, ``{ref}`` filled in) in a
    real kernel through nbclient, remove the image; returns (the executed notebook, the pushed ref)."""
    import nbformat
    from nbclient import NotebookClient

    tag = f"{prefix}-{uuid.uuid4().hex[:8]}:1"
    dockerfile = f"FROM nbops/busybox:latest\nRUN head -c {size} /dev/urandom > /big.bin && echo {tag} > /t\n"
    engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, forcerm=True)
    ref = f"{lab.state().registry}/nbtest/{tag}"
    try:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.replace("{tag}", tag).replace("{ref}", ref))
                                             for c in cells])
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        engine.client.images.remove(tag, force=True)
    return nb, ref


def test_push_in_a_kernel_shows_one_widget_row_per_layer(engine, lab, tmp_path):
    nb, ref = _push_in_a_kernel(engine, lab, tmp_path, "wprog", 1_500_000, [
        "%load_ext nbops\n%config NbopsMagics.progress = 'widget'",
        "r = %push {tag} --to {ref}\nprint(r.verified, len(r.layers))"])
    push_cell = nb.cells[1]
    assert [o for o in push_cell.outputs if o.output_type == "error"] == []
    n_layers = len(engine.client.images.get(ref).attrs["RootFS"]["Layers"])
    text = "".join(o.get("text", "") for o in push_cell.outputs if o.output_type == "stream")
    assert text.strip() == f"True {n_layers}"  # no text progress lines beside the widget
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in push_cell.outputs)

    models = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"].values()
    bars = [m["state"] for m in models if m["model_name"] == "IntProgressModel"]
    labels = [m["state"]["value"] for m in models if m["model_name"] == "LabelModel"]
    assert len(bars) == n_layers
    assert all(b["value"] == b["max"] and b["bar_style"] == "success" for b in bars)
    assert any(v.startswith(f"push {ref}: ") and "layers pushed" in v for v in labels)  # the summary header
    assert sum(v.startswith("pushed ") for v in labels) >= 1
    assert sum(v.startswith(("pushed ", "mounted ", "already exists")) for v in labels) == n_layers


def test_auto_progress_is_text_under_nbclient(engine, lab, tmp_path):
    """``auto`` in a kernel driven by nbclient (papermill, ``nbops run``): text lines, no widget that would be
    saved frozen. (JupyterLab gets widgets: tests/browser/test_deploy_browser.py prints the mode there.)"""
    nb, _ = _push_in_a_kernel(engine, lab, tmp_path, "wauto", 800_000, [
        "import os\nos.environ.pop('NBOPS_PROGRESS', None)\n%load_ext nbops\n"
        "from nbops import progress\nprint('MODE', progress.mode())",
        "r = %push {tag} --to {ref}\nprint(r.verified)"])
    assert "".join(o.get("text", "") for o in nb.cells[0].outputs).strip() == "MODE text"
    push_cell = nb.cells[1]
    text = "".join(o.get("text", "") for o in push_cell.outputs if o.output_type == "stream")
    assert text.strip().endswith("True") and " pushed " in text  # per-layer text lines
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in push_cell.outputs)

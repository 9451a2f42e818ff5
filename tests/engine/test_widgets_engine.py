"""The pickers read the real lab and feed %deploy."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine


def test_node_picker_reads_the_swarm(engine, lab):
    from nbops.widgets import NodePicker, OrchestratorPicker

    picker = NodePicker(engine)
    df = picker.to_frame()
    assert list(df["hostname"]) == ["node1"]
    assert df["role"].iloc[0].startswith("manager") and "nbops.node=node1" in df["labels"].iloc[0]
    assert df["engine"].iloc[0].startswith("20.10")
    picker.value = ("node1",)
    assert picker.constraints == [] and picker.deploy_options() == {"constraints": []}  # all nodes picked

    orch = OrchestratorPicker(engine)
    names = {c["name"]: c for c in orch.choices}
    assert set(names) == {"engine", "swarm", "stack"} and names["swarm"]["available"]
    assert orch.value == "swarm"
    orch.value = "engine"
    assert orch.deploy_options() == {"orchestrator": "engine"} and "engine" in orch.help.value

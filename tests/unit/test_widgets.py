"""Pickers without an engine: constraints from picks, widget state."""

from __future__ import annotations

from nbops.widgets import NodePicker, constraints_for

ROWS = [{"hostname": h, "role": "worker", "availability": "active"} for h in ("n1", "n2", "n3")]


def test_constraints_for_picks():
    hosts = ["n1", "n2", "n3"]
    assert constraints_for([], hosts) == []
    assert constraints_for(hosts, hosts) == []
    assert constraints_for(["n2"], hosts) == ["node.hostname==n2"]
    assert constraints_for(["n1", "n3"], hosts) == ["node.hostname!=n2"]


def test_node_picker_updates_its_constraints():
    picker = NodePicker(rows=ROWS)
    assert picker.constraints == [] and "any node" in picker.result.value
    picker.value = ("n1", "n2")
    assert picker.deploy_options() == {"constraints": ["node.hostname!=n3"]}
    assert "node.hostname!=n3" in picker.result.value
    assert "<table" in picker.table.value

"""%deploy and %nbops doctor in a real InteractiveShell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))


def test_deploy_magic_bad_input_is_one_line(ipshell):
    with pytest.raises(UsageError, match="--name NAME"):
        ipshell.run_line_magic("deploy", "img:1")
    with pytest.raises(UsageError, match="bad update order"):
        ipshell.run_line_magic("deploy", "img:1 --name x --update order=sideways")
    with pytest.raises(UsageError, match="not a NodePicker"):
        ipshell.run_line_magic("deploy", "img:1 --name x --from nothing")


@pytest.mark.engine
def test_deploy_magic_rollout_and_rollback(ipshell, engine, lab):
    from deploy_images import build_web

    from nbops.deploy import swarm
    from nbops.widgets import NodePicker

    reg = lab.status().registry
    v1, v2 = build_web(engine, reg, "v1"), build_web(engine, reg, "v2")
    swarm.remove("mweb", engine=engine)
    ipshell.user_ns["picker"] = NodePicker(engine)
    ipshell.user_ns["picker"].value = ("node1",)
    try:
        upd = "--update parallelism=1,delay=0,monitor=2s,order=start-first --init -p 8080"
        r1 = ipshell.run_line_magic("deploy", f"{v1} --name mweb --replicas 2 --from picker {upd}")
        assert r1.ok and len(r1.tasks) == 2
        r2 = ipshell.run_line_magic("deploy", f"{v2} --name mweb --replicas 2 --probe {upd}")
        assert r2.ok and r2.probe.requests > 0
        r3 = ipshell.run_line_magic("deploy", "--rollback mweb")
        assert r3.ok and r3.outcome == "rolled_back" and r3.image == r1.image
        report = ipshell.run_line_magic("nbops", "doctor")
        assert report.ok
    finally:
        swarm.remove("mweb", engine=engine)

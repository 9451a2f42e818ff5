"""%%dockerfile + %build in a real InteractiveShell against the lab engine."""

from __future__ import annotations

import uuid

import pytest
from IPython.core.error import UsageError

pytestmark = pytest.mark.engine


def test_build_a_cell_with_args_labels_and_squash(ipshell, engine, tmp_path):
    ipshell.user_ns["greeting"] = "hi-from-the-notebook"
    ipshell.run_cell_magic("dockerfile", "web",
                           "FROM nbops/busybox\nARG WHO=world\nRUN echo {greeting} $WHO > /msg\nRUN echo two > /two\n"
                           "HEALTHCHECK CMD true\nCMD [\"cat\", \"/msg\"]\n")
    tag = f"nbt-m-{uuid.uuid4().hex[:6]}:1"
    res = ipshell.run_line_magic("build", f"web -t {tag} --build-arg WHO=ops --label team=ops --squash")
    assert res.tags == [tag] and res.squashed is not None and res.squashed.layers_after < res.n_layers
    assert engine.client.containers.run(tag, remove=True) == b"hi-from-the-notebook ops\n"
    assert engine.client.images.get(tag).labels["team"] == "ops"
    df = res.to_frame()
    assert "RUN echo hi-from-the-notebook $WHO > /msg" in set(df.instruction)
    engine.client.images.remove(tag, force=True)


def test_failing_build_is_one_line_and_the_log_is_kept(ipshell, engine, capsys):
    ipshell.run_cell_magic("dockerfile", "broken", "FROM nbops/busybox\nRUN echo oops-output; exit 4\n")
    with pytest.raises(UsageError) as info:
        ipshell.run_line_magic("build", f"broken -t nbt-m-{uuid.uuid4().hex[:6]}:1")
    msg = str(info.value)
    assert "exit code 4" in msg and "oops-output" in msg and "\n" not in msg
    magics = ipshell.magics_manager.registry["NbopsMagics"]
    assert magics.last_error.exit_code == 4 and magics.last_error.build_log
    ipshell.run_line_magic("nbops", "error")
    assert "oops-output" in capsys.readouterr().out


def test_unknown_cell_is_a_usage_error(ipshell):
    with pytest.raises(UsageError, match="no Dockerfile named 'nope'"):
        ipshell.run_line_magic("build", "nope -t x:1")

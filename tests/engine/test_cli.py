"""The `nbops` command against the real lab."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbops.cli", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())


def test_lab_status_lists_nodes_registry_and_engine(lab):
    res = run("lab", "status")
    assert res.returncode == 0, res.stderr
    st = lab.state()
    assert f"registry {st.registry} up" in res.stdout
    assert "node1" in res.stdout and "manager" in res.stdout and "20.10" in res.stdout


def test_lab_up_twice_is_harmless(lab):
    pid = lab.state().nodes[0].dockerd_pid
    res = run("lab", "up")
    assert res.returncode == 0, res.stderr
    assert lab.state().nodes[0].dockerd_pid == pid


def test_bad_subcommand_is_one_line(lab):
    res = run("lab", "explode")
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "invalid choice" in res.stderr

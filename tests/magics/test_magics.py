"""The IPython layer in a real InteractiveShell: lazy loading, one-line errors, bounded waits."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError


def test_load_ext_is_lazy():
    code = ("from IPython.core.interactiveshell import InteractiveShell; import sys;"
            "InteractiveShell.instance().run_line_magic('load_ext', 'nbops');"
            "print(sorted(m for m in ('docker', 'pandas', 'matplotlib', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("line, fragment", [
    ("%build hello --bogus", "unrecognized arguments: --bogus"),
    ("%deploy hello:1 --name web --replicas two", "invalid int value: 'two'"),
    ("%deploy hello:1", "--name"),
    ("%build nosuch -t x", "no Dockerfile named 'nosuch'"),
    ("%build hello -t x --build-arg NOEQUALS", "bad --build-arg 'NOEQUALS'"),
    ("%nbops frob", "unknown %nbops command 'frob'"),
    ("%nbops lab frob", "invalid choice: 'frob'"),
    ("%push = ' \n '", "unrecognized arguments: ' \\n '"),  # the user's line break, shown escaped
    ("%nbops registry", "usage: %nbops registry login HOST"),
])
def test_bad_input_is_one_usage_error_line(ipshell, line, fragment):
    ipshell.run_cell_magic("dockerfile", "hello", "FROM nbops/busybox\nRUN true\n")
    with pytest.raises(UsageError) as exc:
        ipshell.run_line_magic(*line[1:].split(" ", 1))
    msg = str(exc.value)
    assert fragment in msg
    assert "\n" not in msg.strip()


@pytest.mark.parametrize("line, shows", [
    ("help", "%nbops registry login HOST"), ("--help", "%nbops doctor"), ("lab --help", "usage: nbops lab"),
    ("lab fault --help", "restart-manager"), ("history -h", "%nbops history [builds|pushes|deploys|pulls]"),
    ("registry --help", "%nbops registry login"), ("runs --help", "%nbops runs [RUN_ID]"),
])
def test_nbops_help_prints_usage_and_changes_nothing(ipshell, capsys, line, shows):
    assert ipshell.run_line_magic("nbops", line) is None  # no SystemExit, no error
    out = capsys.readouterr()
    assert shows in out.out and out.err == ""


def test_broken_dockerfile_stops_at_the_line(ipshell):
    with pytest.raises(UsageError) as exc:
        ipshell.run_cell_magic("dockerfile", "bad", "FROM nbops/busybox\nRUNN echo\n")
    assert "line 2" in str(exc.value) and "RUNN" in str(exc.value)


def test_dockerfile_interpolates_notebook_variables(ipshell):
    ipshell.user_ns["release"] = "7.1"
    cell = ipshell.run_cell_magic("dockerfile", "app", "FROM nbops/busybox\nRUN echo {release} > /v\n")
    assert "echo 7.1 > /v" in cell.text


def test_unreachable_engine_is_one_line_naming_the_address(ipshell, tmp_path, monkeypatch):
    sock = tmp_path / "nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    ipshell.run_cell_magic("dockerfile", "hello", "FROM nbops/busybox\nRUN true\n")
    t0 = time.monotonic()
    with pytest.raises(UsageError) as exc:
        ipshell.run_line_magic("build", "hello -t x:1")
    assert time.monotonic() - t0 < 10
    msg = str(exc.value)
    assert f"no Docker engine answers at unix://{sock}" in msg
    assert "nbops lab up" in msg and "\n" not in msg


def test_hung_engine_times_out_with_one_line(ipshell, tmp_path, monkeypatch):
    """A socket that accepts connections but never answers, like a SIGSTOPped dockerd."""
    path = str(tmp_path / "hung.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept_and_hold():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        ipshell.run_line_magic("config", "NbopsMagics.timeout = 2")
        t0 = time.monotonic()
        with pytest.raises(UsageError) as exc:
            ipshell.run_line_magic("push", "hello:1")
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()
    assert accepted, "the client never connected"
    assert elapsed < 2 + 8, elapsed
    assert "did not answer within the timeout" in str(exc.value)


def test_config_traits_exist(ipshell):
    ipshell.run_line_magic("config", "NbopsMagics.deploy_timeout = 42")
    magics = ipshell.magics_manager.registry["NbopsMagics"]
    assert magics.deploy_timeout == 42
    ipshell.run_line_magic("config", "NbopsMagics.builder = 'kaniko'")  # IPython logs the TraitError
    assert magics.builder == "auto"
    ipshell.run_line_magic("config", "NbopsMagics.builder = 'legacy'")
    assert magics.builder == "legacy"

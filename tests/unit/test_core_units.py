"""Unit tests of the plain-Python core (no engine)."""

from __future__ import annotations

import pytest

from nbops.deploy import Port
from nbops.dockerfile import DockerfileCell, interpolate
from nbops.errors import BuildError, ConfigError, DockerfileError, NbopsError
from nbops.history import History


def test_error_carries_data_and_prints_one_line():
    err = BuildError("step 2 failed\nwith exit code 3", hint="see the log", step="RUN x", build_log=["a", "b"])
    assert err.step == "RUN x" and err.build_log == ["a", "b"]
    assert err.one_line() == "step 2 failed with exit code 3 — see the log"
    assert isinstance(err, NbopsError)


def test_history_records_parent_and_children_in_one_transaction(history: History):
    bid = history.record("builds", {"ts": 1.0, "name": "app", "ok": True, "tags": ["app:1"]},
                         {"build_steps": [{"step": 1, "instruction": "FROM x"}, {"step": 2, "instruction": "RUN y"}]})
    steps = history.frame("SELECT build_id, step, instruction FROM build_steps ORDER BY step")
    assert list(steps["build_id"]) == [bid, bid]
    assert list(steps["instruction"]) == ["FROM x", "RUN y"]
    assert history.builds()["tags"].iloc[0] == '["app:1"]'


def test_history_rolls_back_a_failed_record(history: History):
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError):
        # the second child repeats the primary key: the whole record must vanish
        history.record("builds", {"ts": 1.0, "name": "bad", "ok": True},
                       {"build_steps": [{"step": 1}, {"step": 1}]})
    assert history.execute("SELECT count(*) FROM builds")[0][0] == 0
    assert history.execute("SELECT count(*) FROM build_steps")[0][0] == 0


def test_history_migrations_apply_once(tmp_path):
    h1 = History(tmp_path / "h.sqlite")
    h1.record("pushes", {"ts": 1.0, "ok": True, "ref": "r/x:1"})
    h2 = History(tmp_path / "h.sqlite")
    assert h2.execute("SELECT count(*) FROM pushes")[0][0] == 1
    names = [r[0] for r in h2.execute("SELECT name FROM migrations")]
    assert names == sorted(set(names)) and "0001_core" in names


def test_interpolation_fills_known_names_only():
    text = 'FROM base:{tag}\nENV A=${HOME} B={unknown}\nRUN echo {{literal}}'
    assert interpolate(text, {"tag": "1.2", "HOME": "no"}) == 'FROM base:1.2\nENV A=${HOME} B={unknown}\nRUN echo {literal}'


@pytest.mark.parametrize("text, line", [
    ("RUN echo hi\n", 1),
    ("FROM x\nFROB y\n", 2),
])
def test_dockerfile_check_names_the_line(text, line):
    with pytest.raises(DockerfileError) as exc:
        DockerfileCell("x", text).check()
    assert exc.value.line == line


def test_dockerfile_check_accepts_args_before_from():
    DockerfileCell("x", "ARG V=1\nFROM base:${V}\nRUN true\n").check()


@pytest.mark.parametrize("spec, expected", [
    ("8080", Port(8080, None, "tcp")),
    ("80:8080", Port(8080, 80, "tcp")),
    ("53:53/udp", Port(53, 53, "udp")),
])
def test_port_parse(spec, expected):
    assert Port.parse(spec) == expected


@pytest.mark.parametrize("spec", ["", "http", "80:", "a:b"])
def test_port_parse_rejects_garbage(spec):
    with pytest.raises(ConfigError):
        Port.parse(spec)


def test_target_ref():
    from nbops.distribute import target_ref

    assert target_ref("hello:1", None, "10.0.0.1:5000") == "10.0.0.1:5000/hello:1"
    assert target_ref("hello", None, "reg:5000") == "reg:5000/hello:latest"
    assert target_ref("docker.io/library/hello:2", None, "reg:5000") == "reg:5000/hello:2"
    assert target_ref("hello:1", "other:5000/team/hello", None) == "other:5000/team/hello:1"
    assert target_ref("reg:5000/x:3", None, None) == "reg:5000/x:3"

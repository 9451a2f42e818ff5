"""Credentials never show themselves and come from the docker config when nothing else is given."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from nbops.registry import Credentials, Secret, credentials, split_ref


def test_secret_never_renders():
    s = Secret("hunter2-xyz")
    c = Credentials("r:5000", "alice", s)
    for text in (repr(s), str(s), f"{s}", repr(c), str(c), f"{c}"):
        assert "hunter2-xyz" not in text
    assert s.reveal() == "hunter2-xyz"
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_credentials_from_docker_config(tmp_path, monkeypatch):
    token = base64.b64encode(b"bob:pw-from-config").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"10.9.9.1:5000": {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    c = credentials("10.9.9.1:5000")
    assert c is not None and c.username == "bob" and c.source == "docker config"
    assert c.password.reveal() == "pw-from-config"
    assert credentials("10.9.9.2:5000") is None
    explicit = credentials("10.9.9.1:5000", {"username": "carol", "password": "x"})
    assert explicit.username == "carol" and explicit.source == "given"


def test_split_ref():
    assert split_ref("10.1.1.1:5000/a/b:1") == ("10.1.1.1:5000", "a/b", "1")
    assert split_ref("10.1.1.1:5000/a") == ("10.1.1.1:5000", "a", "latest")
    assert split_ref("r.io/a@sha256:" + "0" * 64)[2] == "sha256:" + "0" * 64

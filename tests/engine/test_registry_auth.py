"""Authentication against a real htpasswd registry on the lab gateway; the password never leaks."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from nbops import distribute, registry
from nbops.errors import AuthError
from nbops.registry import Registry

pytestmark = pytest.mark.engine

USER = "alice"
PASSWORD = os.environ["NBOPS_SUITE_PASSWORD"]  # fresh each run (tests/conftest.py): a hit is a leak, never a coincidence


_DIRS: dict[str, Path] = {}


def auth_registry_dir(address: str) -> Path:
    return _DIRS[address]


@pytest.fixture(scope="module")
def auth_registry(lab, tmp_path_factory):
    """``docker-registry serve`` with htpasswd (bcrypt) auth on the lab gateway, stopped at the end."""
    import bcrypt  # a [dev] dependency: the auth proof must not silently skip
    d = tmp_path_factory.mktemp("authreg")
    gw = lab.state().gateway
    with socket.socket() as s:
        s.bind((gw, 0))
        port = s.getsockname()[1]
    (d / "htpasswd").write_text(f"{USER}:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode() + "\n")
    (d / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"http: {{addr: '{gw}:{port}'}}\n"
        f"storage: {{filesystem: {{rootdirectory: '{d}/data'}}, delete: {{enabled: true}}}}\n"
        f"auth: {{htpasswd: {{realm: nbops, path: '{d}/htpasswd'}}}}\n")
    log = open(d / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        registry.wait_ready(f"{gw}:{port}")
        _DIRS[f"{gw}:{port}"] = d
        yield f"{gw}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        registry.logout(f"{gw}:{port}")


@pytest.fixture
def image(engine):
    tag = f"auth-{uuid.uuid4().hex[:8]}:1"
    df = f"FROM nbops/busybox:latest\nRUN echo {tag} > /t\n"
    engine.client.images.build(fileobj=io.BytesIO(df.encode()), tag=tag, forcerm=True)
    yield tag
    engine.client.images.remove(tag, force=True)


def test_wrong_password_is_one_clear_line(auth_registry, engine, image, history):
    with pytest.raises(AuthError) as err:
        registry.login(auth_registry, USER, "not-the-password")
    line = err.value.one_line()
    assert "refused" in line and USER in line and "not-the-password" not in line and "\n" not in str(err.value)
    with pytest.raises(AuthError) as err:
        distribute.push(image, f"{auth_registry}/team/a:1", engine=engine, history=history,
                        auth={"username": USER, "password": "not-the-password"})
    assert "refused the push" in str(err.value) and "not-the-password" not in str(err.value)
    with pytest.raises(AuthError):  # and no credentials at all
        Registry(auth_registry).repositories()


def test_right_password_push_browse_pull(auth_registry, engine, image, history):
    creds = registry.login(auth_registry, USER, PASSWORD)
    assert PASSWORD not in repr(creds)
    res = distribute.push(image, f"{auth_registry}/team/a:1", engine=engine, history=history)
    assert res.verified
    r = Registry(auth_registry)
    assert "team/a" in r.repositories() and r.tags("team/a") == ["1"]
    engine.client.images.remove(f"{auth_registry}/team/a:1")
    assert distribute.pull(f"{auth_registry}/team/a:1", engine=engine, history=history).digest == res.digest
    registry.logout(auth_registry)
    with pytest.raises(AuthError, match="without credentials"):
        distribute.push(image, f"{auth_registry}/team/a:2", engine=engine, history=history)


def test_credentials_from_docker_config(auth_registry, engine, image, history, tmp_path, monkeypatch):
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry.logout(auth_registry)
    res = distribute.push(image, f"{auth_registry}/team/cfg:1", engine=engine, history=history)
    assert res.verified
    assert registry.credentials(auth_registry).source == "docker config"


def test_credentials_from_a_credential_helper(auth_registry, engine, image, history, tmp_path, monkeypatch):
    """docker's credential-helper protocol: `docker-credential-<name> get` reads the server on stdin."""
    helper = tmp_path / "bin" / "docker-credential-nbtest"
    helper.parent.mkdir()
    store = tmp_path / "store.json"  # the helper's own store (a keychain stands here in real life)
    store.write_text(json.dumps({auth_registry: {"Username": USER, "Secret": PASSWORD}}))
    helper.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        "assert sys.argv[1] == 'get'\nserver = sys.stdin.read().strip()\n"
        f"entry = json.load(open({str(store)!r})).get(server)\n"
        "if not entry:\n    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps({'ServerURL': server, **entry}))\n")
    helper.chmod(0o755)
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {auth_registry: "nbtest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    registry.logout(auth_registry)
    creds = registry.credentials(auth_registry)
    assert creds.username == USER and creds.source == "docker config credential helper"
    res = distribute.push(image, f"{auth_registry}/team/helper:1", engine=engine, history=history)
    assert res.verified


def test_magic_user_prompt(auth_registry, ipshell, image, monkeypatch):
    registry.logout(auth_registry)
    answers = iter(["wrong-one", PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(UsageError) as err:
        ipshell.run_line_magic("push", f"{image} --to {auth_registry}/team/m:1 --user {USER}")
    assert "refused" in str(err.value) and "wrong-one" not in str(err.value)
    res = ipshell.run_line_magic("push", f"{image} --to {auth_registry}/team/m:1 --user {USER}")
    assert res.verified
    # asked once: the second push reuses the in-memory credentials (the iterator is exhausted)
    assert ipshell.run_line_magic("push", f"{image} --to {auth_registry}/team/m:2 --user {USER}").verified


NOTEBOOK_CELLS = [
    "%load_ext nbops",
    # the user types the password into the getpass field: simulated by reading it from the environment
    # (same cell: ipykernel installs its own getpass at the start of every execution)
    "import getpass, os\ngetpass.getpass = lambda prompt='': os.environ['NBT_TYPED_PASSWORD']\n"
    "%nbops registry login {reg} --user {user}",
    "res = %push {image} --to {reg}/team/nb:1\nres",
    "print(repr(res)); res.to_frame()",
    "from nbops import registry\nregistry.credentials('{reg}')",
    "try:\n    %push {image} --to {reg}/team/nb:2 --user nobody\nexcept Exception as e:\n    print(e)",
    "%nbops error",
    "%nbops history pushes",
    "import logging; logging.getLogger().handlers",
]


def test_executed_notebook_never_holds_the_password(auth_registry, image, nbops_home, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    registry.logout(auth_registry)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(reg=auth_registry, user=USER, image=image)) for c in NOTEBOOK_CELLS]
    env_pw = dict(os.environ, NBT_TYPED_PASSWORD=PASSWORD)
    old = dict(os.environ)
    os.environ.update(env_pw)
    try:
        client = NotebookClient(nb, timeout=240, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    out = tmp_path / "executed.ipynb"
    nbformat.write(nb, out)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    problems = [o for o in outputs if o.get("output_type") == "error" or "UsageError" in str(o.get("text", ""))]
    assert not problems, [c.get("outputs") for c in nb.cells]
    text = out.read_text()
    assert "PushResult" in text and "verified" in text  # the push really ran in the notebook
    assert PASSWORD not in text
    # the history store the kernel wrote (and its WAL), every log under NBOPS_HOME
    # (the engines' image stores are skipped: layer data, not logs), the registry's own log
    # (read by nbops.audit.scan in a child process: reading a live store's files in this process would
    # drop its SQLite locks and let a kernel reset the WAL under it — see tests/reliability/test_audit_isolation.py)
    from nbops.audit import scan

    skip = ("/data/", "/containerd/", "/containerd-state/", "/exec/")
    files = [p for p in [*Path(nbops_home).rglob("*"), *Path(auth_registry_dir(auth_registry)).rglob("*.log")]
             if p.is_file() and not p.is_socket() and not any(s in str(p) for s in skip)]
    hist = Path(os.environ["NBOPS_HISTORY"])
    assert hist.exists() and {hist.name, "dockerd.log", "registry.log"} <= {p.name for p in files}
    found = scan(files, PASSWORD)
    assert found.files + len(found.skipped) == len(files)
    assert found.clean, found.to_frame().to_string()
    from nbops.history import History

    pushes = History(hist).pushes()
    assert (pushes["ref"] == f"{auth_registry}/team/nb:1").any()

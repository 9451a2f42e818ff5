"""Push, pull and browse against the lab's real registry (plain HTTP, delete enabled)."""

from __future__ import annotations

import io
import uuid

import pytest
from IPython.core.error import UsageError

from nbops import distribute
from nbops.errors import NbopsError, NotFound
from nbops.registry import Registry

pytestmark = pytest.mark.engine


def build_image(engine, tag: str, payload: str) -> str:
    dockerfile = f"FROM nbops/busybox:latest\nRUN echo '{payload}' > /payload.txt\n"
    image, _ = engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, forcerm=True)
    return image.id


@pytest.fixture
def image(engine):
    tag = f"dist-{uuid.uuid4().hex[:8]}:1"
    build_image(engine, tag, tag)
    yield tag
    engine.client.images.remove(tag, force=True)


def test_push_browse_pull_delete(engine, lab, image, history):
    reg = lab.state().registry
    repo = f"nbtest/{image.split(':')[0]}"
    res = distribute.push(image, f"{reg}/{repo}:1.0.0", engine=engine, history=history)
    assert res.verified and res.digest.startswith("sha256:")
    assert {lp.status for lp in res.layers} <= {"pushed", "exists", "mounted"}
    assert any(lp.status == "pushed" for lp in res.layers)

    r = Registry(reg, engine=engine)
    assert repo in r.repositories()
    tags = r.tags_frame(repo)
    assert list(tags["tag"]) == ["1.0.0"] and tags["digest"][0] == res.digest
    layers = r.layers_frame(repo, "1.0.0")
    assert len(layers) == len(res.layers) and (layers["size"] > 0).all()  # compressed sizes as stored

    # pull it back into an engine that lacks the tag
    engine.client.images.remove(f"{reg}/{repo}:1.0.0")
    pulled = distribute.pull(f"{reg}/{repo}:1.0.0", engine=engine, history=history)
    assert pulled.verified and pulled.digest == res.digest
    assert pulled.image_id == engine.client.images.get(image).id
    rows = history.pulls()
    assert list(rows["digest"]) == [res.digest] and rows["ok"].all() and rows["kind"][0] == "registry"

    # delete the tag (manifest by digest)
    assert r.delete(repo, "1.0.0") == res.digest
    assert not r.exists(repo, "1.0.0")
    with pytest.raises(NotFound):
        r.layers_frame(repo, "1.0.0")


def test_repush_skips_layers(engine, lab, image, history):
    reg = lab.state().registry
    ref = f"{reg}/nbtest/re-{image.split(':')[0]}:r1"
    first = distribute.push(image, ref, engine=engine, history=history)
    again = distribute.push(image, ref, engine=engine, history=history)
    assert again.digest == first.digest and again.bytes_sent == 0
    assert all(lp.status in ("exists", "mounted") for lp in again.layers)
    pushes = history.pushes()
    assert len(pushes) == 2 and pushes["bytes_sent"].iloc[1] == 0


def test_pull_missing_tag_is_one_clear_error(engine, lab, history):
    reg = lab.state().registry
    with pytest.raises(NbopsError) as err:
        distribute.pull(f"{reg}/nbtest/does-not-exist:1", engine=engine, history=history)
    assert "does-not-exist" in str(err.value) and "\n" not in str(err.value)
    assert history.pulls()["ok"].tolist() == [0]


def test_magics_policy_and_browse(ipshell, engine, lab, image, monkeypatch):
    reg = lab.state().registry
    ipshell.run_line_magic("config", f"NbopsMagics.protected_registries = ['{reg}']")
    with pytest.raises(UsageError, match="protected registry"):
        ipshell.run_line_magic("push", f"{image} --to {reg}/nbtest/pol:latest")
    with pytest.raises(UsageError, match="not a valid image reference"):
        ipshell.run_line_magic("push", f"{image} --to {reg}/NBtest/Pol:1")
    res = ipshell.run_line_magic("push", f"{image} --to {reg}/nbtest/pol:2.0.0")
    assert res.verified
    # same content again to an immutable tag: allowed (not an overwrite)
    assert ipshell.run_line_magic("push", f"{image} --to {reg}/nbtest/pol:2.0.0").digest == res.digest
    other = f"dist-{uuid.uuid4().hex[:8]}:1"
    build_image(engine, other, other)
    try:
        with pytest.raises(UsageError, match="immutable"):
            ipshell.run_line_magic("push", f"{other} --to {reg}/nbtest/pol:2.0.0")
        assert Registry(reg).digest("nbtest/pol", "2.0.0") == res.digest  # untouched
        # a mutable tag may move
        ipshell.run_line_magic("push", f"{other} --to {reg}/nbtest/pol:dev")
    finally:
        engine.client.images.remove(other, force=True)
    repos = ipshell.run_line_magic("nbops", "registry repos")
    assert "nbtest/pol" in set(repos["repository"])
    tags = ipshell.run_line_magic("nbops", "registry tags nbtest/pol")
    assert set(tags["tag"]) == {"2.0.0", "dev"}
    assert ipshell.run_line_magic("nbops", "registry delete nbtest/pol:dev").startswith("sha256:")
    assert set(ipshell.run_line_magic("nbops", "registry tags nbtest/pol")["tag"]) == {"2.0.0"}
    engine.client.images.remove(f"{reg}/nbtest/pol:2.0.0")
    pulled = ipshell.run_line_magic("pull", "nbtest/pol:2.0.0")
    assert pulled.digest == res.digest
    assert len(ipshell.run_line_magic("nbops", "history pulls")) >= 1


def test_naming_template_push(ipshell, engine, lab, image, tmp_path, monkeypatch):
    import subprocess

    reg = lab.state().registry
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@e.x"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    (tmp_path / "nb.ipynb").write_text("{}")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "tag", "v0.3.1"], check=True)
    monkeypatch.chdir(tmp_path)
    ipshell.run_line_magic("config", "NbopsMagics.name_template = '{registry}/{team}/{name}:{git_tag|git_sha}'")
    ipshell.run_line_magic("config", "NbopsMagics.team = 'ml'")
    name = image.split(":")[0]
    assert ipshell.run_line_magic("nbops", f"name {image}") == f"{reg}/ml/{name}:v0.3.1"
    res = ipshell.run_line_magic("push", image)
    assert res.ref == f"{reg}/ml/{name}:v0.3.1" and res.verified
    # the tag is immutable now: another image may not take it
    other = f"dist-{uuid.uuid4().hex[:8]}:1"
    build_image(engine, other, other)
    try:
        engine.client.images.get(other).tag(f"{name}", "2")
        with pytest.raises(UsageError, match="immutable"):
            ipshell.run_line_magic("push", f"{name}:2")
    finally:
        engine.client.images.remove(other, force=True)
        engine.client.images.remove(f"{name}:2", force=True)


@pytest.fixture
def no_delete_registry(lab, tmp_path):
    """A plain registry on the lab gateway whose storage has deletes disabled (the default)."""
    import socket
    import subprocess

    from nbops.registry import wait_ready

    gw = lab.state().gateway
    with socket.socket() as s:
        s.bind((gw, 0))
        port = s.getsockname()[1]
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: warn}}\nhttp: {{addr: '{gw}:{port}'}}\n"
        f"storage: {{filesystem: {{rootdirectory: '{tmp_path}/data'}}}}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"{gw}:{port}")
        yield f"{gw}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_delete_refused_where_the_registry_forbids_it(engine, image, history, no_delete_registry, ipshell):
    from nbops.errors import RegistryError

    res = distribute.push(image, f"{no_delete_registry}/nbtest/keep:1", engine=engine, history=history)
    with pytest.raises(RegistryError, match="does not allow deletes"):
        Registry(no_delete_registry).delete("nbtest/keep", "1")
    assert Registry(no_delete_registry).digest("nbtest/keep", "1") == res.digest
    layers = ipshell.run_line_magic("nbops", f"registry layers {no_delete_registry}/nbtest/keep:1")
    assert len(layers) == len(res.layers) and layers["digest"].str.startswith("sha256:").all()
    with pytest.raises(UsageError, match="does not allow deletes"):
        ipshell.run_line_magic("nbops", f"registry delete {no_delete_registry}/nbtest/keep:1")

"""Secrets: a notebook run through the magics with a test password and a test build secret leaves
neither in the saved notebook, the history store, IPython's history, the lab's logs or the image.
Build contexts: nothing outside the context (symlink targets) or excluded by .dockerignore is sent."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# fresh each run (tests/conftest.py), shared with the end-of-run audit of every notebook, store and log
PASSWORD = os.environ["NBOPS_SUITE_PASSWORD"]
BUILD_SECRET = os.environ["NBOPS_SUITE_BUILD_SECRET"]


@pytest.fixture(scope="module")
def slab(helpers):
    lab = helpers.start_lab(nodes=1)
    yield lab
    helpers.stop_lab(lab)


def _notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_code_cell('docker_host = ""\nregistry = ""\nsecret_file = ""\ntag = ""\nservice = ""',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "%load_ext nbops\n"
            "get_ipython().run_line_magic('config', f'NbopsMagics.docker_host = {docker_host!r}')\n"
            "get_ipython().run_line_magic('config', f'NbopsMagics.registry = {registry!r}')\n"
            "import os\npassword = os.environ['NBOPS_TEST_PASSWORD']  # never written in the notebook"),
        nbformat.v4.new_code_cell(
            "%%dockerfile app\nFROM nbops/busybox\n"
            "RUN --mount=type=secret,id=token test -s /run/secrets/token && wc -c < /run/secrets/token > /token-length\n"
            'CMD ["sleep", "3600"]'),
        nbformat.v4.new_code_cell("%build app -t {tag} --secret id=token,src={secret_file}"),
        nbformat.v4.new_code_cell("%push {tag}"),
        nbformat.v4.new_code_cell(
            "from nbops import distribute\nfrom nbops.engine import Engine\n"
            "# credentials go to the engine for this push only; nbops must not keep them anywhere\n"
            "distribute.push(tag, registry=registry, engine=Engine.connect(docker_host),\n"
            "                auth={'username': 'nbops', 'password': password})"),
        nbformat.v4.new_code_cell("%deploy {tag} --name {service} -e DB_PASSWORD=$password --timeout 90"),
        nbformat.v4.new_code_cell("%nbops history builds"),
        nbformat.v4.new_code_cell("%nbops history pushes"),
        nbformat.v4.new_code_cell("%nbops history deploys"),
        nbformat.v4.new_code_cell("%nbops error"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_notebook_leaks_no_secret(slab, tmp_path, figures, monkeypatch):
    import docker
    import papermill as pm

    from nbops import history
    from nbops.audit import scan

    st = slab.state()
    node = st.nodes[0]
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(BUILD_SECRET)
    ipython_dir = tmp_path / "ipython"
    monkeypatch.setenv("NBOPS_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    src, out = tmp_path / "secrets.ipynb", tmp_path / "secrets-out.ipynb"
    nbformat.write(_notebook(), src)
    tag = f"{st.registry}/rel/secret-app:{uuid.uuid4().hex[:6]}"
    service = f"sec-{uuid.uuid4().hex[:6]}"
    pm.execute_notebook(str(src), str(out), kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
                        parameters={"docker_host": node.socket, "registry": st.registry,
                                    "secret_file": str(secret_file), "tag": tag, "service": service})
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = out.read_text()
    assert "<BuildResult" in text and "<PushResult" in text and "<DeployResult" in text

    client = docker.DockerClient(base_url=node.socket, version="auto", timeout=60)
    try:
        # the secret really was there during the build (so its absence below means something)
        length = client.containers.run(tag, ["cat", "/token-length"], remove=True).decode().strip()
        assert int(length) == len(BUILD_SECRET)
        image_tar = tmp_path / "image.tar"
        with open(image_tar, "wb") as fh:
            for chunk in client.images.get(tag).save(named=True):
                fh.write(chunk)
        env = client.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", [])
        assert f"DB_PASSWORD={PASSWORD}" in env  # the value did reach the engine, as the user asked
        client.services.get(service).remove()
    finally:
        client.close()

    targets = [out, src, history.default().path.parent, ipython_dir, image_tar,
               *Path(slab.dir).rglob("*.log")]
    targets = [t for t in targets if t.exists()]
    leaked = 0
    files = 0
    for secret in (PASSWORD, BUILD_SECRET):
        result = scan(targets, secret)
        files += result.files
        leaked += len(result.hits)
        assert result.clean, f"secret found: {result.to_frame().to_string()}"
    # control: the same scanner does find the secrets where they are meant to be
    assert not scan(secret_file, BUILD_SECRET).clean
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"auth": __import__("base64").b64encode(f'{{"password":"{PASSWORD}"}}'.encode()).decode()}))
    assert not scan(control, PASSWORD).clean
    figures.add("secrets", files=files, leaked=leaked)


MARKER_OUTSIDE = "OUTSIDE-" + uuid.uuid4().hex
MARKER_IGNORED = "IGNORED-" + uuid.uuid4().hex


def _context(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker.txt").write_text(MARKER_OUTSIDE)
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "inside.txt").write_text("inside\n")
    (ctx / "link_file").symlink_to(outside / "marker.txt")
    (ctx / "link_dir").symlink_to(outside)
    (ctx / "rel_link").symlink_to("../outside/marker.txt")
    (ctx / "ignored.txt").write_text(MARKER_IGNORED)
    (ctx / "sub" / "secret.key").write_text(MARKER_IGNORED)
    (ctx / "keep.key").write_text("kept\n")
    (ctx / ".dockerignore").write_text("# comment\nignored.txt\n**/*.key\n!keep.key\n\n  \n")
    return ctx


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_nothing_outside_the_context_is_sent(slab, tmp_path, builder, figures):
    import docker

    from nbops.audit import scan
    from nbops.build import build
    from nbops.engine import Engine
    from nbops.errors import BuildError

    node = slab.state().nodes[0]
    eng = Engine.connect(node.socket, timeout=60)
    ctx = _context(tmp_path)
    tag = f"rel/ctx-{builder}:1"
    build("FROM nbops/busybox\nCOPY . /ctx/\n", [tag], engine=eng, context=ctx, builder=builder, progress="none")
    client = docker.DockerClient(base_url=node.socket, version="auto", timeout=60)
    try:
        listing = client.containers.run(tag, ["sh", "-c", "ls -a /ctx; cat /ctx/keep.key; readlink /ctx/link_file"],
                                        remove=True).decode()
        tar = tmp_path / "image.tar"
        with open(tar, "wb") as fh:
            for chunk in client.images.get(tag).save(named=True):
                fh.write(chunk)
    finally:
        client.close()
    names = set(listing.split())
    assert {"inside.txt", "keep.key", "link_file", "link_dir"} <= names  # the context was sent...
    assert "ignored.txt" not in names and "kept" in listing  # ...minus what .dockerignore excludes
    assert str(tmp_path / "outside" / "marker.txt") in listing  # a link, copied as a link
    for marker in (MARKER_OUTSIDE, MARKER_IGNORED):
        assert scan(tar, marker).clean, f"{marker[:8]} reached the image"
    # following a link out of the context fails clearly (or copies nothing from outside)
    escaped = 0
    for src in ("link_dir/marker.txt", "link_file", "rel_link"):
        try:
            build(f"FROM nbops/busybox\nCOPY {src} /escaped\n", [f"rel/esc-{builder}:1"], engine=eng, context=ctx,
                  builder=builder, progress="none")
        except BuildError as exc:
            assert "\n" not in exc.one_line()
        else:
            client = docker.DockerClient(base_url=node.socket, version="auto", timeout=60)
            try:
                data = b"".join(client.images.get(f"rel/esc-{builder}:1").save(named=True))
            finally:
                client.close()
            escaped += MARKER_OUTSIDE.encode() in data
    assert escaped == 0, "a COPY through a symlink sent a file from outside the context"
    figures.add("bad_input", tried=4, handled=4)
    eng.client.close()
    assert subprocess.run(["true"]).returncode == 0 and os.path.isdir(ctx)

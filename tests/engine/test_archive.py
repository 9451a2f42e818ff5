"""Archives (docker save + sha256) and shared directories (OCI layout) round trips on the real lab."""

from __future__ import annotations

import gzip
import io
import json
import uuid

import pytest
from IPython.core.error import UsageError

from nbops import archive, distribute
from nbops.archive import ArchiveError, Layout

pytestmark = pytest.mark.engine


def build(engine, tag, payload_bytes=0):
    df = f"FROM nbops/busybox:latest\nRUN echo {tag} > /t && head -c {payload_bytes} /dev/urandom > /blob\n"
    return engine.client.images.build(fileobj=io.BytesIO(df.encode()), tag=tag, forcerm=True)[0].id


@pytest.fixture
def images(engine):
    made = []

    def make(payload=0):
        tag = f"arch-{uuid.uuid4().hex[:8]}:1"
        build(engine, tag, payload)
        made.append(tag)
        return tag

    yield make
    for tag in made:
        try:
            engine.client.images.remove(tag, force=True)
        except Exception:
            pass


@pytest.mark.parametrize("name", ["img.tar", "img.tar.gz"])
def test_archive_round_trip(engine, images, tmp_path, history, name):
    tag = images(200_000)
    image_id = engine.client.images.get(tag).id
    res = archive.export(tag, tmp_path / name, engine=engine, history=history)
    assert res.image_id == image_id and res.bytes == (tmp_path / name).stat().st_size
    line = (tmp_path / f"{name}.sha256").read_text()
    assert line == f"{res.sha256}  {name}\n"  # sha256sum -c format
    if name.endswith(".gz"):
        assert gzip.open(tmp_path / name).read(512)  # really gzip
    engine.client.images.remove(tag, force=True)
    loaded = archive.load(tmp_path / name, engine=engine, history=history)
    assert loaded.verified and loaded.image_id == image_id
    assert engine.client.images.get(tag).id == image_id
    pulls = history.pulls()
    assert pulls["kind"].tolist() == ["archive"] and pulls["image_id"].tolist() == [image_id]


def test_archive_tampered_is_refused(engine, images, tmp_path, history):
    tag = images()
    res = archive.export(tag, tmp_path / "x.tar", engine=engine, history=history)
    data = bytearray((tmp_path / "x.tar").read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / "x.tar").write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        archive.load(tmp_path / "x.tar", engine=engine, history=history)
    (tmp_path / "x.tar.sha256").unlink()
    with pytest.raises(ArchiveError, match="no checksum file"):
        archive.load(tmp_path / "x.tar", engine=engine, history=history)
    assert res.sha256


def test_shared_dir_dedup_and_round_trip(engine, images, tmp_path, history):
    share = tmp_path / "share"
    a, b = images(300_000), images(50_000)
    ra = distribute.push(a, f"dir:{share}", engine=engine, history=history)
    base_layers = engine.client.images.get("nbops/busybox:latest").attrs["RootFS"]["Layers"]
    assert ra.blobs_written == len(ra.blobs)  # empty share: everything written
    rb = distribute.push(b, f"dir:{share}", engine=engine, history=history)
    skipped = {x.digest for x in rb.blobs if x.status == "exists"}
    assert set(base_layers) <= skipped  # the shared base is not copied again
    own = set(engine.client.images.get(b).attrs["RootFS"]["Layers"]) - set(base_layers)
    assert {x.digest for x in rb.blobs if x.kind == "layer" and x.status == "written"} == own
    assert rb.bytes_written < ra.bytes_written and rb.bytes_skipped >= sum(
        x.bytes for x in ra.blobs if x.digest in base_layers)
    print(f"\nsecond push wrote {rb.blobs_written} blobs / {rb.bytes_written} B, "
          f"skipped {len(skipped)} blobs / {rb.bytes_skipped} B")
    # every blob on disk once, named by its digest; index.json names both images
    layout = Layout(share)
    assert sorted(layout.names()) == sorted([a, b])
    assert json.loads((share / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    # pushing the same image again writes nothing
    again = distribute.push(a, f"dir:{share}", engine=engine, history=history)
    assert again.bytes_written == 0
    # pull both back into the engine after removing them
    ids = {t: engine.client.images.get(t).id for t in (a, b)}
    for t in (a, b):
        engine.client.images.remove(t, force=True)
    for t in (a, b):
        got = distribute.pull(f"dir:{share}/{t}", engine=engine, history=history)
        assert got.image_id == ids[t] and engine.client.images.get(t).id == ids[t]
    assert history.pulls()["kind"].tolist() == ["dir", "dir"]
    assert history.pushes()["bytes_sent"].tolist()[:2] == [ra.bytes_written, rb.bytes_written]


def test_shared_dir_corrupt_blob_is_refused(engine, images, tmp_path, history):
    share = tmp_path / "share"
    tag = images(10_000)
    Layout(share).init()  # an existing layout: NAME may then hold slashes
    res = distribute.push(tag, f"dir:{share}/team/app:7", engine=engine, history=history)
    assert Layout(share).names() == ["team/app:7"]
    own = [x for x in res.blobs if x.kind == "layer"][-1]
    path = Layout(share).blob(own.digest)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="does not match its digest"):
        distribute.pull(f"dir:{share}/team/app:7", engine=engine, history=history)
    with pytest.raises(ArchiveError, match="no image"):
        distribute.pull(f"dir:{share}/team/nope:1", engine=engine, history=history)


def test_magics_dir_and_archive(ipshell, engine, images, tmp_path):
    tag = images(1000)
    res = ipshell.run_line_magic("push", f"{tag} --to dir:{tmp_path}/share")
    assert res.blobs_written >= 2
    frame = ipshell.run_line_magic("nbops", f"registry dir {tmp_path}/share")
    assert frame["name"].tolist() == [tag]
    exp = ipshell.run_line_magic("push", f"{tag} --to archive:{tmp_path}/a.tar.gz")
    engine.client.images.remove(tag, force=True)
    got = ipshell.run_line_magic("pull", f"archive:{tmp_path}/a.tar.gz")
    assert got.image_id == exp.image_id
    engine.client.images.remove(tag, force=True)
    got = ipshell.run_line_magic("pull", f"dir:{tmp_path}/share/{tag}")
    assert got.image_id == exp.image_id
    with pytest.raises(UsageError, match="no archive"):
        ipshell.run_line_magic("pull", f"archive:{tmp_path}/missing.tar")

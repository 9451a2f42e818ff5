"""Squashing on the real lab: fewer layers, deleted bytes gone, config kept, base layers shared."""

from __future__ import annotations

import uuid

import pytest

from nbops.build import build, squash
from nbops.scan import scan_image

pytestmark = pytest.mark.engine

SRC = """FROM nbops/busybox
RUN dd if=/dev/zero of=/big bs=1k count=3000 && echo marker-deleted-later > /gone
RUN rm /big /gone && echo hi > /x
ENV GREETING=hello
WORKDIR /srv
HEALTHCHECK --interval=5s CMD true
CMD ["cat", "/x"]
"""


def test_build_squash_keeps_config_and_base_layers(engine, history):
    tag = f"nbt-sq-{uuid.uuid4().hex[:6]}:1"
    res = build(SRC, [tag], engine=engine, squash=True, history=history, progress="none")
    sq = res.squashed
    base = engine.api.inspect_image("nbops/busybox")
    base_layers = base["RootFS"]["Layers"]
    assert sq.layers_before == res.n_layers == len(base_layers) + 3  # 2 RUN + WORKDIR
    assert sq.layers_after == len(base_layers) + 1 and sq.base_layers == len(base_layers)
    assert sq.size_before >= base["Size"] + 3000 * 1024
    assert sq.size_after < base["Size"] + 10 * 1024, "the deleted 3 MB are gone"
    img = engine.api.inspect_image(tag)
    assert img["Id"] == sq.image_id != res.image_id
    assert img["RootFS"]["Layers"][: len(base_layers)] == base_layers
    cfg = img["Config"]
    assert cfg["Cmd"] == ["cat", "/x"] and "GREETING=hello" in cfg["Env"] and cfg["WorkingDir"] == "/srv"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert engine.client.containers.run(tag, remove=True) == b"hi\n"
    # the deleted file's bytes were in a layer before, and are in none after
    assert not scan_image(engine, res.image_id, b"marker-deleted-later").clean
    assert scan_image(engine, tag, b"marker-deleted-later").clean
    meta = history.frame("SELECT meta FROM builds WHERE id=?", (res.build_id,)).meta.iloc[0]
    assert f'"layers_after": {sq.layers_after}' in meta
    assert "squashed to" in repr(res) and "squash" in res._repr_html_()
    engine.client.images.remove(tag, force=True)


def test_squash_everything_from_scratch(engine, history):
    tag = f"nbt-sq-{uuid.uuid4().hex[:6]}:2"
    res = build("FROM nbops/busybox\nRUN echo a > /a\nRUN echo b > /b\n", [tag], engine=engine, history=history,
                progress="none")
    sq = squash(engine, tag, tags=[tag], keep_base=False)
    assert sq.layers_before == res.n_layers and sq.layers_after == 1 and sq.base_layers == 0
    assert engine.client.containers.run(tag, ["cat", "/a", "/b"], remove=True) == b"a\nb\n"
    df = sq.to_frame()
    assert list(df.layers) == [res.n_layers, 1]
    engine.client.images.remove(tag, force=True)

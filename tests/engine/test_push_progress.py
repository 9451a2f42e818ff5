"""A real push and pull in text mode print one line per layer with its final status."""

from __future__ import annotations

import io
import uuid

import pytest

from nbops import distribute

pytestmark = pytest.mark.engine

FINAL_WORDS = {"pushed": "pushed", "exists": "already exists", "mounted": "mounted", "pulled": "pulled"}


def final_lines(out: str, ids: set[str]) -> dict[str, list[str]]:
    finals: dict[str, list[str]] = {}
    for line in out.splitlines():
        layer, _, rest = line.partition(" ")
        if layer in ids and not rest.startswith(("pushing", "downloading", "extracting")):
            finals.setdefault(layer, []).append(rest)
    return finals


@pytest.fixture
def image(engine):
    tag = f"prog-{uuid.uuid4().hex[:8]}:1"
    dockerfile = ("FROM nbops/busybox:latest\nRUN head -c 2000000 /dev/urandom > /big.bin\n"
                  f"RUN echo '{tag}' > /payload.txt\n")
    engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, forcerm=True)
    yield tag
    engine.client.images.remove(tag, force=True)


def test_real_push_prints_one_final_line_per_layer(engine, lab, image, history, capsys):
    ref = f"{lab.state().registry}/nbtest/{image}"
    res = distribute.push(image, ref, engine=engine, history=history, progress="text")
    out = capsys.readouterr().out
    diff_ids = {d[len("sha256:"):][:12] for d in engine.client.images.get(image).attrs["RootFS"]["Layers"]}
    assert out.splitlines()[0] == f"push {ref}"
    finals = final_lines(out, diff_ids)
    assert set(finals) == diff_ids == {lp.layer for lp in res.layers}
    for lp in res.layers:
        (line,) = finals[lp.layer]  # exactly one final line per layer
        assert line.startswith(FINAL_WORDS[lp.status])
        if lp.status == "pushed":
            assert line.endswith((" ms", " s")) and lp.bytes and lp.bytes > 0
    big = max((lp for lp in res.layers if lp.status == "pushed"), key=lambda lp: lp.bytes or 0)
    assert f"{big.layer} pushing 2.0 MB" in out and "2.0 MB in " in finals[big.layer][0]
    assert out.splitlines()[-1].startswith(f"push {ref}: {sum(lp.status == 'pushed' for lp in res.layers)}/{len(diff_ids)}")

    again = distribute.push(image, ref, engine=engine, history=history, progress="text")
    out = capsys.readouterr().out
    assert {lp.status for lp in again.layers} == {"exists"}
    assert final_lines(out, diff_ids) == {layer: ["already exists"] for layer in diff_ids}

    # pull it back: the layers this engine still has "already exist", the rest are pulled with a size
    engine.client.images.remove(ref)
    engine.client.images.remove(image, force=True)
    pulled = distribute.pull(ref, engine=engine, history=history, progress="text", tag=image)
    out = capsys.readouterr().out
    ids = {lp.layer for lp in pulled.layers}
    finals = final_lines(out, ids)
    assert set(finals) == ids and all(len(v) == 1 for v in finals.values())
    assert any(lp.status == "pulled" for lp in pulled.layers)
    for lp in pulled.layers:
        assert finals[lp.layer][0].startswith(FINAL_WORDS[lp.status])


def test_none_mode_prints_nothing(engine, lab, image, history, capsys):
    res = distribute.push(image, f"{lab.state().registry}/nbtest/quiet-{image}", engine=engine, history=history,
                          progress="none")
    assert res.verified and capsys.readouterr().out == ""

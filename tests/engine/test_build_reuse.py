"""Reuse: a build whose inputs are unchanged since an earlier one, whose image is still on the engine,
tags that image and returns its profile without starting a builder — and anything that changes what
the build would read (a context file written, the base image, args, --no-cache, a deleted image) builds."""

from __future__ import annotations

import uuid

import pytest

from nbops import build as build_mod
from nbops.build import build

pytestmark = pytest.mark.engine

SRC = "FROM nbops/busybox\nARG V=1\nCOPY app.txt /app.txt\nRUN cat /app.txt > /copy && echo $V >> /copy\n"


def _tag() -> str:
    return f"nbt-reuse-{uuid.uuid4().hex[:8]}"


def _ctx(tmp_path, text: str):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "app.txt").write_text(text)
    return ctx


def _file_in(engine, image: str, path: str) -> str:
    out = engine.client.containers.run(image, ["cat", path], remove=True)
    return out.decode()


def test_unchanged_inputs_reuse_the_image_and_record_it(engine, history, tmp_path):
    repo = _tag()
    ctx = _ctx(tmp_path, "one\n")
    first = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert not first.reused
    again = build(SRC, [f"{repo}:1", f"{repo}:2"], engine=engine, context=ctx, history=history, progress="none")
    assert again.reused and again.reused_from == first.build_id
    assert again.image_id == first.image_id
    assert engine.api.inspect_image(f"{repo}:2")["Id"] == first.image_id  # the new tag was applied
    df = again.to_frame()
    assert df[df.instruction.str.match("^(RUN|COPY)")].cached.tolist() == [True, True]
    assert list(df.layer_size) == list(first.to_frame().layer_size)
    assert "reused: inputs unchanged since build #" in repr(again)
    row = history.builds().iloc[-1]
    assert row.ok == 1 and row.image_id == first.image_id and f'"reused_from": {first.build_id}' in row.meta
    assert _file_in(engine, f"{repo}:2", "/copy") == "one\n1\n"
    engine.client.images.remove(f"{repo}:1", force=True)
    engine.client.images.remove(f"{repo}:2", force=True)


def test_a_changed_context_file_or_arg_builds(engine, history, tmp_path):
    repo = _tag()
    ctx = _ctx(tmp_path, "one\n")
    first = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    (ctx / "app.txt").write_text("two\n")  # same size: content decides, not size
    changed = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert not changed.reused and changed.image_id != first.image_id
    assert _file_in(engine, f"{repo}:1", "/copy") == "two\n1\n"
    other_arg = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, buildargs={"V": "2"}, history=history,
                      progress="none")
    assert not other_arg.reused and _file_in(engine, f"{repo}:1", "/copy") == "two\n2\n"
    # back to the first content: a file written since counts as changed (its change time moved, as for
    # make), so the builder runs — and its own cache gives back the first image; then nothing changed
    (ctx / "app.txt").write_text("one\n")
    back = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert not back.reused and back.image_id == first.image_id
    assert _file_in(engine, f"{repo}:1", "/copy") == "one\n1\n"
    again = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert again.reused and again.reused_from == back.build_id
    # a chmod is a change too (the mode is part of what COPY makes)
    (ctx / "app.txt").chmod(0o600)
    assert not build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none").reused
    for img in {first.image_id, changed.image_id, other_arg.image_id}:
        engine.client.images.remove(img, force=True)


def test_a_new_base_image_nocache_or_a_deleted_image_builds(engine, history, tmp_path):
    repo, base = _tag(), _tag()
    ctx = _ctx(tmp_path, "x\n")
    engine.api.tag("nbops/busybox", base, "1")
    src = SRC.replace("FROM nbops/busybox", f"FROM {base}:1")
    first = build(src, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    # the base tag now names another image: what FROM reads changed
    rebased = build(f"FROM nbops/busybox\nLABEL rebased={base}\n", [f"{base}:1"], engine=engine, history=history,
                    progress="none")
    after = build(src, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert not after.reused and after.image_id != first.image_id
    assert engine.api.inspect_image(f"{repo}:1")["Config"]["Labels"].get("rebased") == base
    # --no-cache always builds, and what it made is what the next unchanged build reuses
    cold = build(src, [f"{repo}:1"], engine=engine, context=ctx, nocache=True, history=history, progress="none")
    assert not cold.reused and cold.image_id != after.image_id
    warm = build(src, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert warm.reused and warm.image_id == cold.image_id
    # the image is deleted: nothing to reuse, the build runs
    engine.client.images.remove(f"{repo}:1", force=True)
    assert not any(cold.image_id == i.id for i in engine.client.images.list(all=True))
    rebuilt = build(src, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert not rebuilt.reused and engine.api.inspect_image(f"{repo}:1")["Id"] == rebuilt.image_id
    for ref in (f"{repo}:1", f"{base}:1", first.image_id, after.image_id, rebased.image_id):
        try:
            engine.client.images.remove(ref, force=True)
        except Exception:
            pass


def test_reuse_found_in_the_history_store_by_a_new_process(engine, history, tmp_path, monkeypatch):
    repo = _tag()
    ctx = _ctx(tmp_path, "store\n")
    first = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    monkeypatch.setattr(build_mod, "_REUSE", {})  # what a fresh kernel knows: only the store
    again = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none")
    assert again.reused and again.reused_from == first.build_id and again.image_id == first.image_id
    assert [(s.instruction, s.in_final) for s in again.steps] == [(s.instruction, s.in_final) for s in first.steps]
    # reuse=False asks the builder itself (its own cache answers)
    asked = build(SRC, [f"{repo}:1"], engine=engine, context=ctx, history=history, progress="none", reuse=False)
    assert not asked.reused and asked.image_id == first.image_id and asked.builder == first.builder
    engine.client.images.remove(f"{repo}:1", force=True)

"""The per-instruction build profile against the real lab engine, on both builders."""

from __future__ import annotations

import uuid

import pytest

from nbops.build import build
from nbops.errors import BuildError, DockerfileError

pytestmark = pytest.mark.engine

MULTI = """FROM nbops/busybox AS build
ARG V=1
RUN echo "$V" > /v && dd if=/dev/zero of=/big bs=1k count=300
FROM nbops/busybox AS unused
RUN echo never-needed
FROM nbops/busybox
LABEL stage=final
COPY --from=build /v /v
RUN dd if=/dev/zero of=/final bs=1k count=50
ENV X=1
"""


def _name() -> str:
    return f"nbt-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_multistage_profile_has_stages_and_final_layers(engine, history, builder):
    tag = f"{_name()}:1"
    res = build(MULTI, [tag], engine=engine, builder=builder, buildargs={"V": "abc"}, nocache=True,
                history=history, progress="none")
    assert res.builder == builder
    df = res.to_frame()
    final = df[df.in_final]
    assert list(final.stage.unique()) == ["stage-2"]
    assert list(final.instruction) == ["FROM nbops/busybox", "LABEL stage=final", "COPY --from=build /v /v",
                                       "RUN dd if=/dev/zero of=/final bs=1k count=50", "ENV X=1"]
    base = engine.client.images.get("nbops/busybox")
    assert int(final.layer_size.iloc[0]) == base.attrs["Size"]
    sizes = dict(zip(final.instruction, final.layer_size))
    assert sizes["COPY --from=build /v /v"] == 4  # "abc\n": the build arg reached the build stage
    assert 50 * 1024 <= sizes["RUN dd if=/dev/zero of=/final bs=1k count=50"] < 60 * 1024
    assert sizes["ENV X=1"] == 0 and sizes["LABEL stage=final"] == 0
    assert int(final.cumulative_size.iloc[-1]) == res.size
    # layer ids are the image's own diff ids, one per layer-making step
    diff_ids = engine.client.images.get(tag).attrs["RootFS"]["Layers"]
    ids = [i for i in final.layer_id if isinstance(i, str)]
    assert ids == diff_ids[len(diff_ids) - len(ids):] and len(ids) >= 2
    # the build stage ran (its 300 kB never reaches the image), not in the final image
    built = df[df.stage == "build"]
    assert not built.in_final.any() and built.layer_size.isna().all()
    run = built[built.instruction.str.startswith("RUN")]
    assert run.duration_s.iloc[0] > 0 and not run.cached.iloc[0]
    assert res.size < base.attrs["Size"] + 100 * 1024
    if builder == "buildkit":
        assert "unused" not in set(df.stage), "BuildKit skips a stage the target does not need"
    # build args, steps and stages land in the history store
    row = history.frame("SELECT * FROM builds WHERE id=?", (res.build_id,)).iloc[0]
    assert row.ok == 1 and row.image_id == res.image_id and row.builder == builder
    steps = history.frame("SELECT * FROM build_steps WHERE build_id=? ORDER BY step", (res.build_id,))
    assert len(steps) == len(df) and set(steps.stage) == set(df.stage)
    engine.client.images.remove(tag, force=True)


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_target_labels_and_cache(engine, history, builder):
    tag = f"{_name()}:t"
    res = build(MULTI, [tag], engine=engine, builder=builder, target="build", labels={"team": "ops"},
                history=history, progress="none")
    df = res.to_frame()
    assert set(df[df.in_final].stage) == {"build"}
    assert "stage-2" not in set(df.stage)
    img = engine.client.images.get(tag)
    assert img.labels.get("team") == "ops" and "stage" not in img.labels
    big = df[df.instruction.str.startswith('RUN echo "$V"')].iloc[0]
    assert big.layer_size >= 300 * 1024 and big.in_final
    again = build(MULTI, [tag], engine=engine, builder=builder, target="build", labels={"team": "ops"},
                  history=history, progress="none", reuse=False)  # the builder's own cache report
    assert not again.reused
    assert again.to_frame().query("instruction.str.startswith('RUN')", engine="python").cached.all()
    cold = build(MULTI, [tag], engine=engine, builder=builder, target="build", labels={"team": "ops"},
                 nocache=True, history=history, progress="none")
    assert not cold.to_frame().query("instruction.str.startswith('RUN')", engine="python").cached.any()
    engine.client.images.remove(tag, force=True)


def test_pull_policy_uses_the_registry_base_only_when_asked(lab, engine, history):
    reg = lab.status().registry
    base = f"{reg}/nbops/pulltest-{uuid.uuid4().hex[:6]}:1"
    v2 = build("FROM nbops/busybox\nRUN echo v2 > /base\n", [base], engine=engine, history=history, progress="none")
    for chunk in engine.api.push(base, stream=True, decode=True):
        assert "error" not in chunk, chunk
    v1 = build("FROM nbops/busybox\nRUN echo v1 > /base\n", [base], engine=engine, history=history, progress="none")
    assert v1.image_id != v2.image_id
    src = f"FROM {base}\nRUN cat /base > /seen\n"
    layers = {v.image_id: engine.api.inspect_image(v.image_id)["RootFS"]["Layers"] for v in (v1, v2)}
    local = build(src, [f"{_name()}:p"], engine=engine, history=history, progress="none")
    pulled = build(src, [f"{_name()}:p"], engine=engine, pull=True, history=history, progress="none")
    got_local = engine.api.inspect_image(local.image_id)["RootFS"]["Layers"]
    got_pulled = engine.api.inspect_image(pulled.image_id)["RootFS"]["Layers"]
    assert got_local[: len(layers[v1.image_id])] == layers[v1.image_id]
    assert got_pulled[: len(layers[v2.image_id])] == layers[v2.image_id]


def test_base_only_in_the_lab_registry_is_pulled_by_the_engine(lab, engine, history):
    """BuildKit 20.10 ignores the lab's CIDR insecure-registries; nbops pulls the base through the engine."""
    reg = lab.status().registry
    base = f"{reg}/nbops/onlyremote-{uuid.uuid4().hex[:6]}:1"
    build("FROM nbops/busybox\nRUN echo remote > /remote\n", [base], engine=engine, history=history, progress="none")
    for chunk in engine.api.push(base, stream=True, decode=True):
        assert "error" not in chunk, chunk
    pushed = engine.api.inspect_image(base)["RootFS"]["Layers"]
    engine.api.remove_image(base, force=True)
    res = build(f"FROM {base}\nRUN cat /remote > /seen\n", [f"{_name()}:r"], engine=engine, builder="buildkit",
                history=history, progress="none")
    assert engine.api.inspect_image(res.image_id)["RootFS"]["Layers"][: len(pushed)] == pushed


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_failing_run_gives_step_output_tail_and_exit_code(engine, history, builder):
    src = "FROM nbops/busybox\nRUN echo preparing\nRUN echo first-line; sleep 0.3; echo boom-reason >&2; exit 7\nRUN echo never\n"
    with pytest.raises(BuildError) as info:
        build(src, [f"{_name()}:f"], engine=engine, builder=builder, history=history, progress="none")
    err = info.value
    line = err.one_line()
    assert "exit code 7" in line or "code: 7" in line
    assert "exit 7" in line and "\n" not in line
    assert "last output: boom-reason" in line
    assert err.exit_code == 7
    assert any("boom-reason" in t for t in err.output_tail)
    assert any("boom-reason" in t for t in err.build_log) and len(err.build_log) > len(err.output_tail)
    row = history.frame("SELECT ok, error FROM builds ORDER BY id DESC LIMIT 1").iloc[0]
    assert row.ok == 0 and "7" in row.error


def test_heredoc_stops_before_the_engine_with_the_line(engine, history):
    with pytest.raises(DockerfileError) as info:
        build("FROM nbops/busybox\nRUN true\nRUN <<EOF\necho hi\nEOF\n", ["x:1"], engine=engine, history=history)
    assert info.value.line == 3 and "heredoc" in info.value.one_line()


def test_syntax_error_stops_the_build_with_the_line(engine, history):
    with pytest.raises(DockerfileError) as info:
        build("FROM nbops/busybox\nRUN true\nCOPPY a b\n", ["x:1"], engine=engine, history=history)
    assert info.value.line == 3 and "COPPY" in str(info.value)
    assert len(history.frame("SELECT * FROM builds")) == 0


def test_ten_steps_or_more_keep_every_duration(engine, history):
    """BuildKit pads step numbers from 10 steps on ("[ 1/12]"): every step must still be matched."""
    src = "FROM nbops/busybox\n" + "".join(f"RUN echo {i} > /f{i}\n" for i in range(11)) + "ENV DONE=1\n"
    tag = f"{_name()}:ten"
    res = build(src, [tag], engine=engine, nocache=True, history=history, progress="none")
    df = res.to_frame()
    runs = df[df.instruction.str.startswith("RUN")]
    assert len(runs) == 11 and runs.duration_s.notna().all() and (~runs.cached.astype(bool)).all()
    assert runs.layer_id.notna().all()
    engine.client.images.remove(tag, force=True)

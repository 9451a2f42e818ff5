"""Build → Distribute → Deploy against the real lab engine, registry and swarm."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
import requests

from nbops import history
from nbops.build import build
from nbops.deploy import deploy
from nbops.deploy.swarm import remove
from nbops.distribute import push
from nbops.errors import BuildError, RolloutFailed

pytestmark = pytest.mark.engine

DOCKERFILE = """FROM nbops/busybox
RUN echo "{marker}" > /index.html
RUN dd if=/dev/zero of=/blob bs=1k count=200 2>/dev/null
ENV RELEASE={marker}
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD test -f /index.html
CMD ["httpd", "-f", "-p", "8080", "-h", "/"]
"""


@pytest.fixture(scope="module")
def marker() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_build_profile_has_a_row_per_instruction(engine, marker, builder):
    tag = f"skel-{builder}:{marker}"
    res = build(DOCKERFILE.format(marker=marker), [tag], engine=engine, name="skel", builder=builder)
    df = res.to_frame()
    assert res.builder == builder
    assert [i.split()[0] for i in df["instruction"]] == ["FROM", "RUN", "RUN", "ENV", "HEALTHCHECK", "CMD"]
    blob = df[df["instruction"].str.contains("dd if=")].iloc[0]
    assert blob["layer_size"] == 200 * 1024
    assert blob["layer_id"].startswith("sha256:") or len(blob["layer_id"]) >= 12
    assert df["cumulative_size"].iloc[-1] == res.size
    assert res.n_layers == 4  # the base (COPY busybox, RUN --install) + two RUN layers
    img = engine.client.images.get(tag)
    assert img.id == res.image_id
    # a rebuild is served by the cache
    again = build(DOCKERFILE.format(marker=marker), [tag], engine=engine, name="skel", builder=builder)
    assert again.image_id == res.image_id
    cached = again.to_frame().set_index("instruction")["cached"]
    assert bool(cached[f'RUN echo "{marker}" > /index.html']) is True
    rows = history.default().frame("SELECT image_id, ok FROM builds WHERE image_id=?", (res.image_id,))
    assert len(rows) == 2 and rows["ok"].all()


def test_failing_step_names_step_and_exit_code(engine):
    with pytest.raises(BuildError) as exc:
        build("FROM nbops/busybox\nRUN echo going down; exit 7\n", ["skel-fail:1"], engine=engine)
    err = exc.value
    assert err.exit_code == 7
    assert "exit 7" in err.step
    assert any("going down" in line for line in err.output_tail)
    assert err.build_log


def test_push_reports_layers_and_a_verified_digest(engine, lab, marker):
    tag = f"skel-buildkit:{marker}"
    build(DOCKERFILE.format(marker=marker), [tag], engine=engine, builder="buildkit")
    res = push(tag, engine=engine)
    registry = lab.state().registry
    assert res.ref == f"{registry}/{tag}"
    assert res.verified
    # ask the registry ourselves
    r = requests.head(f"http://{registry}/v2/skel-buildkit/manifests/{marker}", timeout=5,
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.headers["Docker-Content-Digest"] == res.digest
    df = res.to_frame()
    assert len(df) == res_layers(engine, tag)
    assert set(df["status"]) <= {"pushed", "exists", "mounted"}
    assert (df["status"] == "pushed").any()
    again = push(tag, engine=engine)
    assert again.digest == res.digest
    assert set(again.to_frame()["status"]) == {"exists"}


def res_layers(engine, tag):
    return len(engine.client.images.get(tag).attrs["RootFS"]["Layers"])


def test_deploy_waits_until_every_replica_is_healthy_and_serves(engine, marker):
    tag = f"skel-buildkit:{marker}"
    build(DOCKERFILE.format(marker=marker), [tag], engine=engine, builder="buildkit")
    pushed = push(tag, engine=engine)
    name = f"skel-{marker}"
    try:
        res = deploy(tag, name=name, replicas=2, publish=["8080"], engine=engine, timeout=90)
        assert res.outcome == "healthy"
        assert res.image == pushed.pinned.replace(f":{marker}@", "@")
        tasks = res.tasks_frame()
        assert (tasks["state"] == "running").sum() == 2 and set(tasks["health"]) == {"healthy"}
        timeline = res.to_frame()
        assert {"starting", "running"} <= set(timeline["state"])
        assert len(res.endpoints) == 2
        for address, port in res.endpoints:
            with urllib.request.urlopen(f"http://{address}:{port}/", timeout=3) as resp:
                assert resp.read().decode().strip() == marker
        row = history.default().frame("SELECT outcome FROM deploys WHERE id=?", (res.deploy_id,))
        assert row["outcome"].tolist() == ["healthy"]
    finally:
        remove(name, engine=engine)


def test_deploy_of_an_unhealthy_image_fails_within_its_timeout(engine, marker):
    tag = f"skel-sick:{marker}"
    build("FROM nbops/busybox\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD false\n"
          'CMD ["sleep", "600"]\n', [tag], engine=engine)
    push(tag, engine=engine)
    name = f"sick-{marker}"
    try:
        with pytest.raises(RolloutFailed) as exc:
            deploy(tag, name=name, replicas=1, engine=engine, timeout=12)
        result = exc.value.result
        assert result.outcome == "timeout"
        assert "unhealthy" in " ".join(result.to_frame()["message"]) or "starting" in set(result.to_frame()["state"])
    finally:
        remove(name, engine=engine)

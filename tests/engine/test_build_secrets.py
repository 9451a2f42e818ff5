"""Build-time secrets through BuildKit, proven absent by a scan of every layer, the config and the
history; the classic leaks are found by the same scan and warned about by the lint before building."""

from __future__ import annotations

import hashlib
import secrets as pysecrets
import uuid

import pytest

from nbops.build import REDACTED, build
from nbops.dockerfile import lint
from nbops.errors import BuildError
from nbops.scan import scan_image

pytestmark = pytest.mark.engine


@pytest.fixture
def secret(tmp_path):
    value = "nbops-" + pysecrets.token_hex(16)
    path = tmp_path / "api_token"
    path.write_text(value)
    return value, path


def _tag() -> str:
    return f"nbt-sec-{uuid.uuid4().hex[:8]}:1"


def _no_secret_anywhere(value: str, res_or_err, history) -> None:
    needle = value.encode()
    assert value not in "\n".join(res_or_err.build_log if hasattr(res_or_err, "build_log") else res_or_err.log)
    assert value not in repr(res_or_err) and value not in str(res_or_err)
    history.close()
    raw = b"".join(p.read_bytes() for p in history.path.parent.glob(history.path.name + "*"))
    assert needle not in raw, "the secret reached the history store"


def test_secret_mount_leaves_no_trace(engine, history, secret, capsys):
    value, path = secret
    src = ("FROM nbops/busybox\n"
           "RUN --mount=type=secret,id=api_token sha256sum /run/secrets/api_token | cut -d' ' -f1 > /token.sha\n"
           "RUN --mount=type=secret,id=api_token cat /run/secrets/api_token\n")
    assert not any(f.level in ("error", "warning") and f.rule in ("NB002", "NB003") for f in lint(src).findings)
    tag = _tag()
    res = build(src, [tag], engine=engine, secrets={"api_token": path}, history=history, progress="text")
    # the secret was really there during the build: its digest is in the image (and the scan finds it)...
    digest = hashlib.sha256(value.encode()).hexdigest().encode()
    found = scan_image(engine, tag, digest)
    assert [(h.where, h.path) for h in found.hits] == [("layer", "token.sha")]
    # ...and its bytes are nowhere: not in any layer tar, the config or the history
    report = scan_image(engine, tag, value.encode())
    assert report.clean, report
    assert report.n_layers == len(engine.api.inspect_image(tag)["RootFS"]["Layers"])
    assert {"history", "config"} <= set(report.scanned) and f"layer {report.n_layers - 1}" in report.scanned
    # `cat` printed it into the build output: nbops hid it from the kept log, the profile and the screen
    assert any(REDACTED in line for line in res.log)
    out = capsys.readouterr()
    assert value not in out.out + out.err
    _no_secret_anywhere(value, res, history)
    engine.client.images.remove(tag, force=True)


def test_scan_finds_a_secret_passed_as_build_arg(engine, history, secret, capsys):
    value, _ = secret
    src = "FROM nbops/busybox\nARG API_TOKEN\nRUN echo using-the-token-$API_TOKEN > /dev/null\n"
    warn = [f for f in lint(src).findings if f.rule == "NB002"]
    assert warn and warn[0].line == 2 and warn[0].level == "error"
    tag = _tag()
    res = build(src, [tag], engine=engine, buildargs={"API_TOKEN": value}, history=history, progress="text")
    report = scan_image(engine, tag, value.encode())
    assert not report.clean
    assert {"history", "config"} <= {h.where for h in report.hits}
    assert value not in repr(report) and value not in report.to_frame().to_string()
    out = capsys.readouterr()
    assert value not in out.out + out.err, "BuildKit echoes build args in step names: nbops must hide them"
    _no_secret_anywhere(value, res, history)
    engine.client.images.remove(tag, force=True)


def test_scan_finds_a_secret_copied_then_deleted(engine, history, secret, tmp_path):
    value, path = secret
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "token.txt").write_text(value)
    src = "FROM nbops/busybox\nCOPY token.txt /tmp/token.txt\nRUN cat /tmp/token.txt > /dev/null && rm /tmp/token.txt\n"
    warn = [f for f in lint(src).findings if f.rule == "NB003"]
    assert warn and warn[0].line == 2
    tag = _tag()
    build(src, [tag], engine=engine, context=ctx, history=history, progress="none")
    # the file is gone from the container's view...
    out = engine.client.containers.run(tag, ["sh", "-c", "ls /tmp/token.txt 2>&1 || true"], remove=True)
    assert b"No such file" in out
    # ...but its bytes are still in the COPY layer
    report = scan_image(engine, tag, value.encode())
    layers = engine.api.inspect_image(tag)["RootFS"]["Layers"]
    hits = [(h.where, h.layer, h.path) for h in report.hits]
    assert ("layer", len(layers) - 2, "tmp/token.txt") in hits
    assert report.hits[0].diff_id == layers[len(layers) - 2]
    engine.client.images.remove(tag, force=True)


def test_failing_step_with_a_secret_keeps_it_out_of_the_error(engine, history, secret):
    value, path = secret
    src = "FROM nbops/busybox\nRUN --mount=type=secret,id=api_token cat /run/secrets/api_token; exit 3\n"
    with pytest.raises(BuildError) as info:
        build(src, [_tag()], engine=engine, secrets={"api_token": path}, history=history, progress="none")
    err = info.value
    assert err.exit_code == 3 and any(REDACTED in t for t in err.output_tail)
    assert value not in "\n".join(err.output_tail)
    _no_secret_anywhere(value, err, history)


def test_legacy_builder_refuses_secrets(engine, secret):
    from nbops.errors import ConfigError

    with pytest.raises(ConfigError, match="BuildKit"):
        build("FROM nbops/busybox\n", ["x:1"], engine=engine, builder="legacy", secrets={"t": secret[1]})

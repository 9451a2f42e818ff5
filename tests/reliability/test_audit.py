"""nbops.audit finds a secret in every form it may take in a file, and reports nothing else."""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.parse

import pytest

from nbops.audit import forms, scan
from nbops.errors import ConfigError

SECRET = "s3cr3t-P@ss w/ürd+%"


@pytest.mark.parametrize("prefix", ["", "x", "xy", "user:"])
def test_every_form_is_found(tmp_path, prefix):
    raw = (prefix + SECRET).encode()
    payloads = {
        "raw": raw,
        "json": json.dumps({"v": prefix + SECRET}).encode(),
        "url": ("a=" + urllib.parse.quote(prefix + SECRET, safe="")).encode(),
        "url-plus": urllib.parse.urlencode({"a": prefix + SECRET}).encode(),
        "base64": b"Authorization: Basic " + base64.b64encode(raw),
        "base64url": base64.urlsafe_b64encode(raw),
        "hex": raw.hex().encode(),
    }
    for name, data in payloads.items():
        (tmp_path / f"{name}.txt").write_bytes(b"noise " + data + b" noise")
    result = scan(tmp_path, SECRET)
    found = {h.path.rsplit("/", 1)[1].removesuffix(".txt") for h in result.hits}
    assert found == set(payloads), result.to_frame()
    assert SECRET not in repr(result) and SECRET not in result._repr_html_()


def test_clean_files_and_near_misses_are_clean(tmp_path):
    (tmp_path / "a.log").write_text("s3cr3t-P@ss w/ürd " * 100)  # the secret minus its last 2 chars
    (tmp_path / "b.ipynb").write_text(json.dumps({"cells": [{"source": "password = os.environ['PW']"}]}))
    result = scan(tmp_path, SECRET)
    assert result.clean and result.files == 2


def test_sqlite_wal_and_gzip(tmp_path):
    db = tmp_path / "h.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (f"prefix {SECRET} suffix",))  # still only in the -wal file
    import gzip

    (tmp_path / "old.log.gz").write_bytes(gzip.compress(f"line {SECRET}\n".encode()))
    result = scan(tmp_path, SECRET)
    wheres = {h.where for h in result.hits}
    assert "sqlite t.v" in wheres and "gzip" in wheres
    conn.close()


def test_short_secret_is_refused():
    with pytest.raises(ConfigError, match="at least"):
        forms("abc")


def test_symlinks_are_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text(SECRET)
    scanned = tmp_path / "dir"
    scanned.mkdir()
    (scanned / "link").symlink_to(outside)
    assert scan(scanned, SECRET).clean

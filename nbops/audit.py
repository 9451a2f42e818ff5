"""Prove a secret value landed nowhere: scan files (saved notebooks, logs, the history store) for it.

A secret rarely leaks verbatim only: a notebook stores it JSON-escaped, a URL carries it
percent-encoded, a docker config or an HTTP header carries it base64-encoded (at any of the three
byte alignments when it sits inside a longer string). :func:`scan` looks for every one of these forms
in the raw bytes of each file, and for SQLite stores also in every text/blob cell (a value split
across WAL frames or pages is still found). Images are scanned by :mod:`nbops.scan`; this module
covers what lives in files.

The result never contains the secret itself: hits name the file, the form found and the offset.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._display import card, frame_html, human_size
from .errors import ConfigError

MIN_SECRET = 4
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Hit:
    path: str
    form: str
    offset: int | None = None
    where: str | None = None  # "bytes", "gzip", or "sqlite TABLE.COLUMN"


@dataclass
class AuditResult:
    """What :func:`scan` found: files and bytes scanned, forms searched, and the hits (no secret inside)."""

    files: int
    bytes: int
    forms: list[str]
    hits: list[Hit] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.hits

    def __repr__(self) -> str:
        verdict = "clean" if self.clean else f"{len(self.hits)} HIT(S)"
        return (f"<AuditResult {verdict}: {self.files} files, {human_size(self.bytes)} scanned for "
                f"{len(self.forms)} forms of the secret>")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(h) for h in self.hits], columns=["path", "form", "offset", "where"])

    def _repr_html_(self) -> str:
        facts = {"verdict": "clean" if self.clean else f"{len(self.hits)} hits", "files": self.files,
                 "scanned": human_size(self.bytes), "forms": ", ".join(self.forms)}
        return card("secret audit", facts, frame_html(self.to_frame()) if self.hits else "")


def forms(secret: str | bytes) -> dict[str, bytes]:
    """Every encoded form of ``secret`` to look for, by name (raw, JSON, URL, base64 at 3 alignments, hex)."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET:
        raise ConfigError(f"a secret of {len(raw)} bytes would match by chance everywhere",
                          hint=f"audit values of at least {MIN_SECRET} bytes")
    text = raw.decode(errors="replace")
    out: dict[str, bytes] = {"raw": raw}
    out["json"] = json.dumps(text)[1:-1].encode()
    out["json-ascii"] = json.dumps(text, ensure_ascii=True)[1:-1].encode()
    out["url"] = urllib.parse.quote(raw, safe="").encode()
    out["url-plus"] = urllib.parse.quote_plus(raw).encode()
    out["hex"] = binascii.hexlify(raw)
    for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for align in range(3):
            piece = _b64_core(raw, align, enc)
            if len(piece) >= MIN_SECRET:
                out[f"{name}@{align}"] = piece
    # drop duplicates (e.g. url == raw for plain ASCII), keep the first name
    seen: dict[bytes, str] = {}
    for name, value in out.items():
        seen.setdefault(value, name)
    return {name: value for value, name in seen.items()}


def _b64_core(raw: bytes, align: int, enc) -> bytes:
    """The part of base64(prefix + raw + suffix) that depends on ``raw`` only, for a prefix of ``align`` bytes."""
    data = b"\0" * align + raw
    whole = len(data) // 3 * 3  # groups that hold no suffix bytes
    encoded = enc(data[:whole])
    skip = 4 if align else 0  # the first group mixes prefix bytes in
    return encoded[skip:]


def scan(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], secret: str | bytes, *,
         max_file: int = 512 * 1024 * 1024, isolate: bool = True, timeout: float = 600.0) -> AuditResult:
    """Look for ``secret`` in every file under ``paths`` (files or directories, recursively).

    ``isolate`` (default): the files are read by a child process. Reading a live SQLite store's files
    (the database, its -wal and -shm) in a process that has that store open is one of SQLite's
    documented ways to corrupt it: closing any descriptor of a file drops every POSIX lock the process
    holds on it, so another process may checkpoint and reset the WAL under this one's connection
    (sqlite.org/howtocorrupt.html §2.2; reproduced here: committed rows vanished). The secret reaches
    the child on its stdin, never on its command line.
    """
    wanted = forms(secret)
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if isolate:
        return _scan_in_child(roots, secret, max_file, timeout)
    result = AuditResult(files=0, bytes=0, forms=sorted(wanted))
    for root in roots:
        for path in _walk(Path(root)):
            try:
                size = path.stat().st_size
                if size > max_file:
                    result.skipped.append(f"{path} ({human_size(size)} > limit)")
                    continue
                data = path.read_bytes()
            except OSError as exc:
                result.skipped.append(f"{path} ({exc.strerror or exc})")
                continue
            result.files += 1
            result.bytes += len(data)
            result.hits += _search(str(path), data, wanted, "bytes")
            if data[:2] == b"\x1f\x8b":
                try:
                    result.hits += _search(str(path), gzip.decompress(data), wanted, "gzip")
                except (OSError, EOFError):
                    pass
            if data.startswith(SQLITE_MAGIC):
                result.hits += _search_sqlite(path, wanted)
    return result


def _walk(root: Path) -> Iterable[Path]:
    if root.is_symlink() or not root.exists():
        return
    if root.is_file():
        yield root
        return
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():  # sockets, fifos and links are not content
                yield p


def _search(path: str, data: bytes, wanted: dict[str, bytes], where: str) -> list[Hit]:
    hits = []
    for name, needle in wanted.items():
        start = data.find(needle)
        if start >= 0:
            hits.append(Hit(path=path, form=name, offset=start, where=where))
    return hits


def _search_sqlite(path: Path, wanted: dict[str, bytes]) -> list[Hit]:
    """Read every text/blob cell (through SQLite, so WAL content is seen as committed rows)."""
    hits: list[Hit] = []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return hits
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            cols = [d[0] for d in cur.description or ()]
            for row in cur:
                for col, value in zip(cols, row):
                    if isinstance(value, str):
                        value = value.encode()
                    if isinstance(value, bytes):
                        for hit in _search(str(path), value, wanted, f"sqlite {table}.{col}"):
                            hit.offset = None
                            hits.append(hit)
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return hits


def _scan_in_child(roots: list, secret: str | bytes, max_file: int, timeout: float) -> AuditResult:
    import subprocess
    import sys

    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    request = json.dumps({"roots": [os.fspath(r) for r in roots], "secret": base64.b64encode(raw).decode(),
                          "max_file": max_file})
    try:
        proc = subprocess.run([sys.executable, "-m", "nbops.audit"], input=request, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"the secret scan did not finish within {timeout:.0f} s",
                          hint="scan fewer or smaller paths, or pass a longer timeout=") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"the secret scan failed: {last[:300]}", hint="check the paths are readable")
    data = json.loads(proc.stdout)
    return AuditResult(files=data["files"], bytes=data["bytes"], forms=data["forms"],
                       hits=[Hit(**h) for h in data["hits"]], skipped=data["skipped"])


def _child_main() -> None:
    import sys

    req = json.loads(sys.stdin.read())
    result = scan(req["roots"], base64.b64decode(req["secret"]), max_file=req["max_file"], isolate=False)
    json.dump(asdict(result), sys.stdout)


__all__ = ["scan", "forms", "AuditResult", "Hit"]


if __name__ == "__main__":
    _child_main()

"""Look for a secret's bytes everywhere an image keeps data: every layer tar, the image config, the
history. Used to prove that a build secret did not land in the image (and that the classic leaks —
a secret passed as ARG, a secret file copied then deleted — are caught).

The image is streamed from the engine (``docker save`` / the SDK's ``get_image``) and never written
to disk; the needle is never printed, logged or stored: a report names only where it was found.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._display import card, esc, frame_html, human_size
from .engine import Engine
from .errors import ConfigError


@dataclass
class Hit:
    where: str  # "layer", "config", "history", "manifest"
    layer: int | None  # 0-based position in the image's RootFS (layers only)
    diff_id: str | None
    path: str | None  # file inside the layer, or the config/history field


@dataclass
class ScanReport:
    """Where the needle was found (``hits``); ``clean`` when nowhere."""

    image: str
    image_id: str
    n_layers: int
    bytes_scanned: int
    hits: list[Hit] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)  # what was looked at: layer tars, config, history

    @property
    def clean(self) -> bool:
        return not self.hits

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([h.__dict__ for h in self.hits], columns=["where", "layer", "diff_id", "path"])

    def __repr__(self) -> str:
        verdict = "clean" if self.clean else f"FOUND in {len(self.hits)} place(s): " + ", ".join(
            f"{h.where}{'' if h.layer is None else f' {h.layer}'}{f' {h.path}' if h.path else ''}" for h in self.hits[:5])
        return (f"<ScanReport {self.image}: {verdict}; scanned {self.n_layers} layers, config, history "
                f"({human_size(self.bytes_scanned)})>")

    def _repr_html_(self) -> str:
        facts = {"image": self.image, "verdict": "clean" if self.clean else f"found in {len(self.hits)} place(s)",
                 "layers": self.n_layers, "scanned": human_size(self.bytes_scanned)}
        table = frame_html(self.to_frame()) if self.hits else f"<div>{esc('secret bytes appear nowhere')}</div>"
        return card("secret scan", facts, table)


class _Stream:
    """A read()-able view of the save stream's chunks (tarfile in stream mode needs only read)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _contains(fileobj: Any, needle: bytes, chunk: int = 1 << 20) -> tuple[bool, int]:
    """Stream ``fileobj`` looking for ``needle`` across chunk boundaries; (found, bytes read)."""
    tail = b""
    total = 0
    found = False
    while True:
        data = fileobj.read(chunk)
        if not data:
            return found, total
        total += len(data)
        if not found and needle in tail + data:
            found = True
        tail = (tail + data)[-(len(needle) - 1):] if len(needle) > 1 else b""


def scan_image(engine: Engine, image: str, needle: bytes, *, timeout: float = 600) -> ScanReport:
    """Scan every layer tar (each file's content, name and headers), the config and the history of
    ``image`` for ``needle``. ``image`` is resolved to its id first: ``docker save REPO`` would export
    every tag of the repository."""
    if not needle:
        raise ConfigError("nothing to scan for: the needle is empty", hint="pass the secret's bytes")
    attrs = engine.call(f"inspect image {image}", engine.api.inspect_image, image)
    image_id = attrs["Id"]
    diff_ids = list(attrs.get("RootFS", {}).get("Layers", []))
    report = ScanReport(image=image, image_id=image_id, n_layers=len(diff_ids), bytes_scanned=0)
    # the history as the engine serves it (CreatedBy holds RUN lines with their build args)
    for i, entry in enumerate(engine.call("read the image history", engine.api.history, image_id)):
        text = json.dumps(entry).encode()
        report.bytes_scanned += len(text)
        if needle in text or needle in (entry.get("CreatedBy") or "").encode():
            report.hits.append(Hit("history", None, None, f"entry {i}: {_field_with(entry, needle)}"))
    report.scanned.append("history")
    if needle in json.dumps(attrs).encode():
        report.hits.append(Hit("config", None, None, f"inspect: {_field_with(attrs, needle)}"))
    stream = engine.call("export the image (docker save)", engine.api.get_image, image_id)
    manifest: list[dict] = []
    layer_hits: dict[str, list[str]] = {}
    configs: dict[str, bytes] = {}
    with tarfile.open(fileobj=_Stream(stream), mode="r|") as outer:  # type: ignore[arg-type]
        for member in outer:
            if not member.isfile():
                continue
            f = outer.extractfile(member)
            if f is None:
                continue
            if member.name.endswith("/layer.tar"):
                paths, n = _scan_layer(f, needle)
                report.bytes_scanned += n
                layer_hits[member.name] = paths
            else:
                data = f.read()
                report.bytes_scanned += len(data)
                if member.name == "manifest.json":
                    manifest = json.loads(data)
                elif member.name.endswith(".json"):
                    configs[member.name] = data
                elif needle in data:
                    report.hits.append(Hit("manifest", None, None, member.name))
    entry = manifest[0] if manifest else {}
    config_bytes = configs.get(entry.get("Config", ""), b"")
    if needle in config_bytes:
        report.hits.append(Hit("config", None, None, f"config file: {_field_with(json.loads(config_bytes), needle)}"))
    report.scanned.append("config")
    for pos, name in enumerate(entry.get("Layers", [])):
        report.scanned.append(f"layer {pos}")
        for path in layer_hits.get(name, []):
            shown = path.encode().replace(needle, b"<match>").decode("utf-8", "replace")  # never show the needle
            report.hits.append(Hit("layer", pos, diff_ids[pos] if pos < len(diff_ids) else None, shown))
    missing = [n for n in entry.get("Layers", []) if n not in layer_hits]
    if missing or len(entry.get("Layers", [])) != len(diff_ids):
        raise ConfigError(f"the export of {image} did not contain every layer ({len(layer_hits)} of {len(diff_ids)})",
                          hint="retry; the scan proves nothing without every layer")
    return report


def _scan_layer(fileobj: Any, needle: bytes) -> tuple[list[str], int]:
    """Paths of the files (or tar headers) of one layer tar in which ``needle`` occurs; bytes read."""
    hits: list[str] = []
    total = 0
    with tarfile.open(fileobj=fileobj, mode="r|") as inner:
        for m in inner:
            header = (m.name + "\0" + (m.linkname or "") + "\0" + json.dumps(m.pax_headers)).encode()
            total += len(header)
            if needle in header:
                hits.append(f"{m.name} (tar header)")
            if m.isfile():
                f = inner.extractfile(m)
                if f is not None:
                    found, n = _contains(f, needle)
                    total += n
                    if found:
                        hits.append(m.name)
    return hits, total


def _field_with(obj: Any, needle: bytes, prefix: str = "") -> str:
    """The first JSON path in ``obj`` whose value holds the needle (never the value itself)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _field_with(v, needle, f"{prefix}.{k}" if prefix else str(k))
            if found:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _field_with(v, needle, f"{prefix}[{i}]")
            if found:
                return found
    elif needle in str(obj).encode():
        return prefix or "(value)"
    return ""

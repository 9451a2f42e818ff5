"""Distribute without a registry: image archives and shared directories.

* :func:`export` writes ``docker save`` output (optionally gzip) and a ``sha256sum``-format checksum
  file beside it; :func:`load` verifies the checksum, loads the archive and checks the image id is
  the one the archive names (``manifest.json`` → ``Config``).
* :func:`push_dir` / :func:`pull_dir` store images in an OCI image layout (``oci-layout``,
  ``index.json``, content-addressed ``blobs/sha256/…``) in a directory — a mounted share. Layers are
  stored uncompressed (``application/vnd.oci.image.layer.v1.tar``), so a blob's digest is the layer's
  diff id and a layer already in the directory (a shared base) is never copied again.

The engine (20.10) only speaks the legacy ``docker save`` format, so nbops converts in a single pass
over the stream; every blob is written to a temporary name and renamed once its digest is checked.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import history as _history
from ._display import card, frame_html, human_size, human_time
from .engine import Engine
from .errors import NbopsError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


class ArchiveError(NbopsError):
    """An archive or shared directory is broken: checksum mismatch, missing blob, wrong image id."""


# -- archives -------------------------------------------------------------------------------------
@dataclass
class ArchiveResult:
    """An exported or loaded archive: path, sha256, size, image id, duration."""

    action: str
    image: str
    path: str
    sha256: str
    bytes: int
    image_id: str
    duration_s: float
    checksum_file: str | None = None
    verified: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.duration_s if self.duration_s else 0.0

    def __repr__(self) -> str:
        what = "verified" if self.verified else "written"
        return (f"<ArchiveResult {self.action} {self.image} {self.path} {human_size(self.bytes)} sha256:{self.sha256[:12]} "
                f"{what}; id {self.image_id[:19]} in {human_time(self.duration_s)}>")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(self)])

    def _repr_html_(self) -> str:
        return card(self.action, {"image": self.image, "path": self.path, "size": human_size(self.bytes),
                                  "sha256": self.sha256[:16] + "…", "image id": self.image_id[:19] + "…",
                                  "verified": "yes" if self.verified else "—", "time": human_time(self.duration_s),
                                  "throughput": f"{self.mb_per_s:.0f} MB/s"})


def _save_name(image: str) -> str:
    # `docker save REPO` exports every tag of REPO: always name one tag (or an id)
    if image.startswith("sha256:") or "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def export(image: str, path: str | os.PathLike[str], *, engine: Engine | None = None, compress: bool | None = None,
           level: int = 1, history: _history.History | None = None) -> ArchiveResult:
    """Write ``image`` to ``path`` in ``docker save`` format (gzip when ``compress`` or ``path`` ends in .gz)
    and ``path.sha256`` beside it."""
    engine = engine or Engine.connect()
    name = _save_name(image)
    dest = Path(path)
    compress = dest.suffix in (".gz", ".tgz") if compress is None else compress
    img = engine.call(f"find image {name}", engine.client.images.get, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    digest = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(tmp, "wb") as raw:
            sink: Any = _HashingWriter(raw, digest)
            out = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=0) if compress else sink
            stream = engine.call(f"save {name}", engine.api.get_image, name, chunk_size=CHUNK)
            engine.call(f"save {name}", _copy_chunks, stream, out if compress else raw, None if compress else digest)
            if compress:
                out.close()
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    duration = time.monotonic() - t0
    size = dest.stat().st_size
    checksum = dest.with_name(dest.name + ".sha256")
    checksum.write_text(f"{digest.hexdigest()}  {dest.name}\n")
    result = ArchiveResult("export", name, str(dest), digest.hexdigest(), size, img.id, duration,
                           checksum_file=str(checksum))
    (history or _history.default()).record("pushes", {
        "ts": time.time(), "run_id": _history.current_run_id(), "image": name, "ref": f"archive:{dest}",
        "digest": "sha256:" + result.sha256, "verified": False, "duration_s": duration, "bytes_sent": size,
        "bytes_skipped": 0, "ok": True})
    return result


def _copy_hashed(src: Any, out: Any) -> str:
    """Copy the file object ``src`` into ``out`` in CHUNK pieces; the sha256 hex digest of what was copied."""
    h = hashlib.sha256()
    while buf := src.read(CHUNK):
        h.update(buf)
        out.write(buf)
    return h.hexdigest()


def _copy_chunks(stream: Any, out: Any, digest: Any = None) -> None:
    """Copy the engine's stream to ``out`` (hashing into ``digest`` if given).

    The socket is read in a second thread, so reading overlaps hashing and writing (both release the GIL).
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=16)
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for chunk in stream:
                q.put(chunk)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
        finally:
            q.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while (chunk := q.get()) is not None:
        if digest is not None:
            digest.update(chunk)
        out.write(chunk)
    reader.join()
    if failure:
        raise failure[0]


class _HashingWriter(io.RawIOBase):
    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw, self.digest = raw, digest

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.digest.update(b)
        return self.raw.write(b)


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: Any, digest: Any) -> None:
        self.raw, self.digest, self.n = raw, digest, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b)
        if n:
            self.digest.update(memoryview(b)[:n])
            self.n += n
        return n or 0


def read_checksum(path: Path) -> str:
    """The expected sha256 from ``path.sha256`` (``sha256sum`` format)."""
    checksum = path.with_name(path.name + ".sha256")
    try:
        text = checksum.read_text().split()
    except OSError:
        raise ArchiveError(f"no checksum file {checksum}", hint="export with nbops (it writes one) or pass verify=False",
                           path=str(path)) from None
    if not text or len(text[0]) != 64:
        raise ArchiveError(f"{checksum} is not a sha256sum line", path=str(path))
    return text[0].lower()


def load(path: str | os.PathLike[str], *, engine: Engine | None = None, verify: bool = True,
         history: _history.History | None = None) -> ArchiveResult:
    """Verify ``path`` against its ``.sha256``, ``docker load`` it, and check the loaded image id."""
    engine = engine or Engine.connect()
    src = Path(path)
    if not src.is_file():
        raise ArchiveError(f"no archive at {src}", hint="check the path", path=str(src))
    t0 = time.monotonic()
    expected = read_checksum(src) if verify else None
    digest = hashlib.sha256()
    manifest = None
    with open(src, "rb") as raw:
        reader = io.BufferedReader(_HashingReader(raw, digest), CHUNK)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                for member in tar:
                    if member.name == "manifest.json":
                        fh = tar.extractfile(member)
                        manifest = json.loads(fh.read()) if fh else None
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ArchiveError(f"{src} is not a readable image archive: {exc}", path=str(src)) from None
        while reader.read(CHUNK):
            pass
    actual = digest.hexdigest()
    if expected and actual != expected:
        raise ArchiveError(f"checksum mismatch for {src}: sha256 {actual[:12]}… but {src.name}.sha256 says {expected[:12]}…",
                           hint="the archive is corrupt or was changed: copy it again", path=str(src))
    if not manifest:
        raise ArchiveError(f"{src} has no manifest.json (not a docker save archive)", path=str(src))
    entry = manifest[0]
    image_id = "sha256:" + entry["Config"].split("/")[-1].removesuffix(".json")
    tags = entry.get("RepoTags") or []
    with open(src, "rb") as fh:
        out = engine.call(f"load {src.name}", engine.api.load_image, fh)
        engine.call(f"load {src.name}", _check_stream, out, f"load {src.name}")
    loaded = engine.call(f"inspect {image_id}", engine.api.inspect_image, image_id)["Id"]
    for tag in tags:
        tagged = engine.call(f"inspect {tag}", engine.api.inspect_image, tag)["Id"]
        if tagged != image_id:
            raise ArchiveError(f"after loading {src.name}, {tag} is {tagged[:19]} not {image_id[:19]}", path=str(src))
    duration = time.monotonic() - t0
    result = ArchiveResult("load", tags[0] if tags else image_id, str(src), actual, src.stat().st_size, loaded,
                           duration, verified=bool(expected) and loaded == image_id)
    _record_pull(history, kind="archive", source=str(src), image=result.image, digest="sha256:" + actual,
                 image_id=loaded, duration_s=duration, nbytes=result.bytes)
    return result


def _check_stream(stream: Any, what: str) -> list[dict[str, Any]]:
    chunks = []
    for chunk in stream:
        if isinstance(chunk, bytes):
            chunk = json.loads(chunk)
        if "error" in chunk or "errorDetail" in chunk:
            msg = chunk.get("error") or chunk.get("errorDetail", {}).get("message")
            raise ArchiveError(f"the engine failed to {what}: {msg}")
        chunks.append(chunk)
    return chunks


def _record_pull(store: _history.History | None, *, kind: str, source: str, image: str, digest: str | None,
                 image_id: str | None, duration_s: float, nbytes: int, ok: bool = True, error: str | None = None,
                 layers_new: int | None = None, layers_total: int | None = None) -> int:
    return (store or _history.default()).record("pulls", {
        "ts": time.time(), "run_id": _history.current_run_id(), "kind": kind, "source": source, "image": image,
        "digest": digest, "image_id": image_id, "duration_s": duration_s, "bytes": nbytes, "ok": ok, "error": error,
        "layers_new": layers_new, "layers_total": layers_total})


# -- shared directory (OCI image layout) --------------------------------------------------------
@dataclass
class BlobRow:
    digest: str
    kind: str
    bytes: int
    status: str  # written | exists


@dataclass
class DirResult:
    """A push to / pull from a shared directory: which blobs were copied and which were already there."""

    action: str
    image: str
    ref: str
    digest: str
    image_id: str
    duration_s: float
    blobs: list[BlobRow] = field(default_factory=list)
    bytes_read: int = 0
    verified: bool = False

    @property
    def bytes_written(self) -> int:
        return sum(b.bytes for b in self.blobs if b.status == "written")

    @property
    def bytes_skipped(self) -> int:
        return sum(b.bytes for b in self.blobs if b.status == "exists")

    @property
    def blobs_written(self) -> int:
        return sum(1 for b in self.blobs if b.status == "written")

    def __repr__(self) -> str:
        return (f"<DirResult {self.action} {self.image} {self.ref} {self.digest[:19]}; {self.blobs_written}/{len(self.blobs)} "
                f"blobs written ({human_size(self.bytes_written)}, {human_size(self.bytes_skipped)} already there) "
                f"in {human_time(self.duration_s)}>")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(b) for b in self.blobs], columns=["digest", "kind", "bytes", "status"])

    def _repr_html_(self) -> str:
        return card(self.action, {"image": self.image, "ref": self.ref, "digest": self.digest[:19] + "…",
                                  "written": human_size(self.bytes_written), "already there": human_size(self.bytes_skipped),
                                  "time": human_time(self.duration_s)}, frame_html(self.to_frame()))


class Layout:
    """An OCI image layout in ``root``; writers take an exclusive lock on ``index.json``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"

    def __repr__(self) -> str:
        return f"<Layout {self.root}>"

    def exists(self) -> bool:
        return (self.root / "index.json").is_file() and (self.root / "oci-layout").is_file()

    def init(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.root / "index.json").exists():
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def blob(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise ArchiveError(f"bad blob digest {digest!r} in {self.root}", path=str(self.root))
        return self.blobs / hexd

    def has(self, digest: str) -> bool:
        return self.blob(digest).is_file()

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return digest, False
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.blob(digest))
        return digest, True

    def put_file(self, src: Any, digest: str) -> None:
        """Copy an open file whose sha256 is ``digest`` into the store, checking the digest as it goes."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs)
        try:
            with os.fdopen(fd, "wb") as fh:
                copied = _copy_hashed(src, fh)
            if "sha256:" + copied != digest:
                raise ArchiveError(f"blob {digest[:19]} changed while copying into {self.root}", path=str(self.root))
            os.replace(tmp, self.blob(digest))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def read_json(self, digest: str) -> dict[str, Any]:
        path = self.blob(digest)
        try:
            data = path.read_bytes()
        except OSError:
            raise ArchiveError(f"blob {digest[:19]}… is missing from {self.root}", path=str(self.root)) from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ArchiveError(f"blob {digest[:19]}… in {self.root} does not match its digest", path=str(self.root))
        return json.loads(data)

    def index(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError):
            raise ArchiveError(f"{self.root} holds no OCI image layout (index.json)",
                               hint="push to it first: %push IMAGE --to dir:PATH", path=str(self.root)) from None

    def _write_index(self, index: dict[str, Any]) -> None:
        tmp = self.root / f".index.json.{os.getpid()}"
        tmp.write_text(json.dumps(index, indent=2))
        os.replace(tmp, self.root / "index.json")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def tag(self, name: str, manifest_digest: str, size: int) -> None:
        with self.locked():
            index = self.index()
            manifests = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != name]
            manifests.append({"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": size,
                              "annotations": {REF_NAME: name}})
            index["manifests"] = manifests
            self._write_index(index)

    def resolve(self, name: str) -> dict[str, Any]:
        for m in self.index().get("manifests", []):
            if (m.get("annotations") or {}).get(REF_NAME) == name:
                return m
        known = ", ".join(self.names()) or "none"
        raise ArchiveError(f"no image {name!r} in {self.root} (has: {known})", path=str(self.root))

    def names(self) -> list[str]:
        return [m["annotations"][REF_NAME] for m in self.index().get("manifests", [])
                if (m.get("annotations") or {}).get(REF_NAME)]

    def frame(self):
        """One row per named image: name, manifest digest, layer count and total layer bytes."""
        import pandas as pd

        rows = []
        for m in self.index().get("manifests", []):
            man = self.read_json(m["digest"])
            rows.append({"name": (m.get("annotations") or {}).get(REF_NAME), "digest": m["digest"],
                         "image_id": man["config"]["digest"], "n_layers": len(man.get("layers", [])),
                         "size": sum(int(x["size"]) for x in man.get("layers", []))})
        return pd.DataFrame(rows, columns=["name", "digest", "image_id", "n_layers", "size"])


def split_dir_ref(spec: str, *, default_name: str | None = None) -> tuple[Path, str]:
    """``dir:/share[/NAME:TAG]`` -> (layout root, ``NAME:TAG``).

    NAME may hold slashes (``team/app:1``) when ``/share`` already holds a layout: the root is the
    nearest parent with an ``index.json``; for a new share, the root is the parent of ``NAME:TAG``.
    """
    path = spec[4:] if spec.startswith("dir:") else spec
    p = Path(path)
    if Layout(p).exists() or ":" not in p.name:
        if not default_name:
            raise ArchiveError(f"{spec} names no image", hint="use dir:/path/NAME:TAG", path=path)
        return p, default_name
    # NAME may hold slashes (team/app:1): the layout root is the nearest parent holding index.json
    for parent in p.parents:
        if Layout(parent).exists():
            return parent, str(p.relative_to(parent))
    return p.parent, p.name


def push_dir(image: str, to: str, *, engine: Engine | None = None, name: str | None = None,
             history: _history.History | None = None) -> DirResult:
    """Store ``image`` in the OCI layout at ``to`` (``dir:/path`` or ``dir:/path/NAME:TAG``)."""
    engine = engine or Engine.connect()
    src = _save_name(image)
    default = name or _short_name(src)
    root, ref_name = split_dir_ref(to, default_name=default)
    layout = Layout(root)
    t0 = time.monotonic()
    attrs = engine.call(f"inspect {src}", engine.api.inspect_image, src)
    image_id = attrs["Id"]
    layout.init()
    blobs: list[BlobRow] = []
    bytes_read = 0
    if layout.has(image_id):
        # same image already stored: nothing to copy, only (re)name it
        config = layout.read_json(image_id)
        layer_digests = list(config["rootfs"]["diff_ids"])
        config_bytes = layout.blob(image_id).stat().st_size
        sizes = {d: layout.blob(d).stat().st_size for d in layer_digests}
        blobs.append(BlobRow(image_id, "config", config_bytes, "exists"))
        blobs.extend(BlobRow(d, "layer", sizes[d], "exists") for d in dict.fromkeys(layer_digests))
        config_size = config_bytes
    else:
        layer_digests, config_size, bytes_read = _save_into(engine, src, image_id, layout, blobs)
    layers = [{"mediaType": OCI_LAYER, "digest": d, "size": layout.blob(d).stat().st_size} for d in layer_digests]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": image_id, "size": config_size}, "layers": layers}
    data = json.dumps(manifest, separators=(",", ":")).encode()
    mdigest, written = layout.put_bytes(data)
    blobs.append(BlobRow(mdigest, "manifest", len(data), "written" if written else "exists"))
    layout.tag(ref_name, mdigest, len(data))
    duration = time.monotonic() - t0
    result = DirResult("push", src, f"dir:{root}/{ref_name}", mdigest, image_id, duration, blobs, bytes_read,
                       verified=True)
    store = history or _history.default()
    store.record("pushes", {
        "ts": time.time(), "run_id": _history.current_run_id(), "image": src, "ref": result.ref, "digest": mdigest,
        "verified": True, "duration_s": duration, "bytes_sent": result.bytes_written,
        "bytes_skipped": result.bytes_skipped, "ok": True},
        {"push_layers": [{"layer": b.digest[7:19], "status": "pushed" if b.status == "written" else "exists",
                          "bytes": b.bytes, "duration_s": None} for b in blobs if b.kind == "layer"]})
    return result


def _save_into(engine: Engine, src: str, image_id: str, layout: Layout,
               blobs: list[BlobRow]) -> tuple[list[str], int, int]:
    """Stream ``docker save`` once: hash every layer tar, copy only blobs the layout lacks."""
    stream = engine.call(f"save {src}", engine.api.get_image, src, chunk_size=CHUNK)
    reader = io.BufferedReader(_IterReader(stream), CHUNK)
    by_path: dict[str, tuple[str, int]] = {}
    links: dict[str, str] = {}
    manifest = None
    config_bytes = b""
    spool_dir = Path(tempfile.mkdtemp(prefix="nbops-oci-"))
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    manifest = json.loads(_read_member(tar, member))
                elif member.name.endswith("/layer.tar") and member.issym():
                    links[member.name] = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                elif member.name.endswith("/layer.tar") and member.isfile():
                    by_path[member.name] = _take_layer(tar, member, layout, spool_dir, blobs)
                elif member.isfile() and member.name.endswith(".json") and "/" not in member.name:
                    data = _read_member(tar, member)
                    if "sha256:" + hashlib.sha256(data).hexdigest() == image_id:
                        config_bytes = data
        bytes_read = reader.raw.n  # type: ignore[attr-defined]
    except NbopsError:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"could not read the saved image {src}: {exc}") from None
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    if not manifest or not config_bytes:
        raise ArchiveError(f"the engine's save of {src} has no manifest or config for {image_id[:19]}")
    for path, target in links.items():
        by_path[path] = by_path[target]
    digests = [by_path[p][0] for p in manifest[0]["Layers"]]
    config = json.loads(config_bytes)
    if digests != list(config["rootfs"]["diff_ids"]):
        raise ArchiveError(f"the layers of {src} do not match its config's diff ids")
    _, written = layout.put_bytes(config_bytes)
    blobs.insert(0, BlobRow(image_id, "config", len(config_bytes), "written" if written else "exists"))
    return digests, len(config_bytes), bytes_read


def _take_layer(tar: tarfile.TarFile, member: tarfile.TarInfo, layout: Layout, spool_dir: Path,
                blobs: list[BlobRow]) -> tuple[str, int]:
    """Hash a layer tar while spooling it locally; move it into the layout only if it is new there."""
    fh = tar.extractfile(member)
    assert fh is not None
    spool = spool_dir / "layer"
    with open(spool, "wb") as out:
        digest = "sha256:" + _copy_hashed(fh, out)
    if any(b.digest == digest for b in blobs):
        return digest, member.size
    if layout.has(digest):
        blobs.append(BlobRow(digest, "layer", member.size, "exists"))
    else:
        with open(spool, "rb") as src:
            layout.put_file(src, digest)
        blobs.append(BlobRow(digest, "layer", member.size, "written"))
    return digest, member.size


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    return fh.read() if fh else b""


class _IterReader(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's save stream)."""

    def __init__(self, chunks: Any) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.n += n
        return n


def pull_dir(spec: str, *, engine: Engine | None = None, tag: str | None = None,
             history: _history.History | None = None) -> DirResult:
    """Load ``dir:/path/NAME:TAG`` from an OCI layout into the engine, checking every blob's digest."""
    engine = engine or Engine.connect()
    root, name = split_dir_ref(spec)
    layout = Layout(root)
    t0 = time.monotonic()
    entry = layout.resolve(name)
    manifest = layout.read_json(entry["digest"])
    config_digest = manifest["config"]["digest"]
    config_data = layout.blob(config_digest).read_bytes()
    if "sha256:" + hashlib.sha256(config_data).hexdigest() != config_digest:
        raise ArchiveError(f"config blob {config_digest[:19]} in {root} does not match its digest", path=str(root))
    layer_digests = [x["digest"] for x in manifest["layers"]]
    for d in layer_digests:
        if not layout.has(d):
            raise ArchiveError(f"layer {d[:19]}… of {name} is missing from {root}", path=str(root))
    local_tag = tag or name
    hashes: dict[str, Any] = {}
    stream = _docker_save_stream(layout, config_digest, config_data, layer_digests, local_tag, hashes)
    out = engine.call(f"load {name}", engine.api.load_image, stream)
    engine.call(f"load {name}", _check_stream, out, f"load {name} from {root}")
    for d, h in hashes.items():
        if "sha256:" + h.hexdigest() != d:
            raise ArchiveError(f"layer {d[:19]}… in {root} does not match its digest", path=str(root))
    loaded = engine.call(f"inspect {local_tag}", engine.api.inspect_image, local_tag)["Id"]
    if loaded != config_digest:
        raise ArchiveError(f"{local_tag} loaded as {loaded[:19]} but {root} stores {config_digest[:19]}",
                           path=str(root))
    duration = time.monotonic() - t0
    blobs = [BlobRow(config_digest, "config", len(config_data), "read")]
    blobs += [BlobRow(d, "layer", layout.blob(d).stat().st_size, "read") for d in dict.fromkeys(layer_digests)]
    nbytes = sum(b.bytes for b in blobs)
    result = DirResult("pull", local_tag, f"dir:{root}/{name}", entry["digest"], loaded, duration, blobs, nbytes,
                       verified=True)
    _record_pull(history, kind="dir", source=result.ref, image=local_tag, digest=entry["digest"], image_id=loaded,
                 duration_s=duration, nbytes=nbytes, layers_total=len(layer_digests))
    return result


def _docker_save_stream(layout: Layout, config_digest: str, config_data: bytes, layers: list[str], tag: str,
                        hashes: dict[str, Any]) -> Iterator[bytes]:
    """Generate a ``docker load`` tar (legacy save format) from layout blobs, hashing layers as they go."""
    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        return info.tobuf(format=tarfile.USTAR_FORMAT)

    def pad(size: int) -> bytes:
        return b"\0" * (-size % 512)

    cfg_name = config_digest[7:] + ".json"
    yield header(cfg_name, len(config_data)) + config_data + pad(len(config_data))
    paths = []
    for d in layers:
        path = f"{d[7:]}/layer.tar"
        paths.append(path)
        if d in hashes:
            continue
        h = hashes[d] = hashlib.sha256()
        blob = layout.blob(d)
        size = blob.stat().st_size
        yield header(path, size)
        with open(blob, "rb") as fh:
            while True:
                buf = fh.read(CHUNK)
                if not buf:
                    break
                h.update(buf)
                yield buf
        yield pad(size)
    man = json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": paths}]).encode()
    yield header("manifest.json", len(man)) + man + pad(len(man))
    yield b"\0" * 1024


def _short_name(image: str) -> str:
    from .naming import parse_reference

    ref = parse_reference(image)
    return f"{ref.path}:{ref.tag or 'latest'}"


__all__ = ["export", "load", "push_dir", "pull_dir", "Layout", "ArchiveResult", "DirResult", "ArchiveError",
           "split_dir_ref"]

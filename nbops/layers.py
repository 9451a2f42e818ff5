"""Layer analysis: what is in each layer, what is wasted and why, and how an image grew.

    rep = layers.analyze("app:1.4")      # LayerReport
    rep.to_frame()                       # per layer: instruction, size, files, bytes added, hidden later
    rep.wasted()                         # per hidden file version: size, the layer that added it, the
                                         #   layer that overwrote/deleted it, and how
    rep.efficiency, rep.wasted_bytes     # dive's numbers, 1:1 (see :func:`dive_efficiency`)
    rep.hidden_bytes                     # the bytes truly hidden in lower layers (see :func:`overlay`)

Each layer is read as a stream of tar headers (never loaded into memory) from one of three sources,
fastest first: the local engine's overlay2 layer directories (``dirs``), a registry's blobs by
digest (``registry``), the ``docker save`` stream (``save``). Every source yields the same listing
for the same layer, so the same report. Listings are cached in the history store keyed by the
layer's diff_id (the sha256 of its uncompressed tar): a version that shares N-1 layers with a known
one reads only its new layer. The stacked state of layers 0..k (a :class:`Stacker`) is snapshotted
by chain id too, so such a version is also *stacked* from its new layer only.
"""

from __future__ import annotations

import http.client
import io
import itertools
import json
import os
import posixpath
import socket
import stat
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, NbopsError, NotFound, RegistryError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .engine import Engine
    from .history import History

SOURCES = ("auto", "dirs", "save", "registry")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
META = ".wh..wh."  # overlay bookkeeping names (.wh..wh..opq, .wh..wh..plnk...): dive skips them
HTTP_TIMEOUT = (5.0, 120.0)

# Entry kinds in a layer listing
DIR, FILE, SYMLINK, HARDLINK, WHITEOUT_K, OPAQUE_K, META_K, OTHER = "d", "f", "l", "h", "w", "o", "m", "x"


class LayerError(NbopsError):
    """A layer or an image could not be read or analysed."""


# ---------------------------------------------------------------------------------------------
# Listings: one per layer, (path, kind, size) per tar entry, in archive order
# ---------------------------------------------------------------------------------------------
@dataclass
class Listing:
    """The tar headers of one layer: ``(path, kind, size)`` per entry, paths as in the layer tar."""

    diff_id: str
    entries: list[tuple[str, str, int]]

    @property
    def size(self) -> int:
        """dive's layer size: the sum of the entries' tar sizes (links, dirs, whiteouts count 0)."""
        return sum(e[2] for e in self.entries)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e[1] in (FILE, SYMLINK, HARDLINK, OTHER))

    def pack(self) -> bytes:
        return zlib.compress(json.dumps(self.entries, separators=(",", ":")).encode(), 1)

    @classmethod
    def unpack(cls, diff_id: str, blob: bytes) -> Listing:
        return cls(diff_id, [tuple(e) for e in json.loads(zlib.decompress(blob))])  # type: ignore[misc]


def _norm(name: str) -> str:
    if name.endswith("/") or name.startswith(("./", "/", "../")) or "//" in name or "/." in name or name in (".", ".."):
        return posixpath.normpath("/" + name).lstrip("/")
    return name


def _dirname(path: str) -> str:
    return path.rpartition("/")[0]


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _kind_of_name(path: str, default: str) -> str:
    base = _basename(path)
    if base == OPAQUE:
        return OPAQUE_K
    if base.startswith(META):
        return META_K
    if base.startswith(WHITEOUT):
        return WHITEOUT_K
    return default


class TarFormatError(LayerError):
    """A stream that should be a tar archive is not one."""


_SKIP_BUF = bytearray(1 << 20)


class _Bounded:
    """The data of one tar member: reads stop at its size; :meth:`skip` discards the rest."""

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        if len(data) < n:
            raise TarFormatError("the tar stream ended inside a member")
        self.left -= len(data)
        return data

    def readinto(self, b: Any) -> int:
        view = memoryview(b)[: self.left]
        if not len(view):
            return 0
        got = self.f.readinto(view)
        if not got:
            raise TarFormatError("the tar stream ended inside a member")
        self.left -= got
        return got

    def skip(self) -> None:
        buf = memoryview(_SKIP_BUF)
        while self.left:
            self.readinto(buf)


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError("a tar header holds no valid number (not a tar stream?)") from None


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        key, _, value = data[sp + 1:pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_tar(f: Any) -> Iterator[tuple[str, bytes, int, _Bounded]]:
    """Stream a tar archive's members as (name, typeflag, size, data); headers only are parsed.

    ``f`` needs ``read``/``readinto``. Handles ustar prefixes, PAX and GNU long names and base-256
    sizes; the data a consumer does not read is skipped (never held in memory).
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        block = f.read(512)
        if len(block) < 512 or block.count(0) == 512:
            return
        try:
            stored = _octal(block[148:156])
        except TarFormatError:
            stored = -1
        if stored != sum(block[:148]) + 256 + sum(block[156:]):
            raise TarFormatError("bad tar header checksum (not a tar stream?)")
        size = _octal(block[124:136])
        flag = block[156:157]
        data = _Bounded(f, size)
        if flag in (b"x", b"g", b"L", b"K"):
            payload = data.read()
            _pad(f, size)
            if flag == b"x":
                pax = _pax(payload)
            elif flag == b"L":
                long_name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00" and block[345]:  # POSIX prefix (GNU uses these bytes otherwise)
            name = _cstr(block[345:500]) + "/" + name
        name = pax.get("path") or long_name or name
        if "size" in pax:
            size = int(pax["size"])
            data = _Bounded(f, size)
        pax, long_name = {}, None
        yield name, flag, size, data
        data.skip()
        _pad(f, size)


def _pad(f: Any, size: int) -> None:
    rest = -size % 512
    if rest and len(f.read(rest)) < rest:
        raise TarFormatError("the tar stream ended inside padding")


_TAR_KINDS = {b"0": FILE, b"\0": FILE, b"7": FILE, b"1": HARDLINK, b"2": SYMLINK, b"5": DIR}


def scan_tar(fileobj: Any, diff_id: str = "") -> Listing:
    """List a layer tar read from ``fileobj`` as a stream (plain or gzip), headers only."""
    f = fileobj if isinstance(fileobj, (io.BufferedReader, _Peekable)) else io.BufferedReader(fileobj, 1 << 20)
    if f.peek(2)[:2] == b"\x1f\x8b":
        import gzip

        f = io.BufferedReader(gzip.GzipFile(fileobj=f), 1 << 20)  # type: ignore[arg-type]
    entries: list[tuple[str, str, int]] = []
    for name, flag, size, _ in iter_tar(f):
        path = _norm(name)
        if not path:
            continue
        kind = _TAR_KINDS.get(flag, OTHER)
        if kind == FILE and name.endswith("/"):
            kind = DIR  # old tars mark directories by a trailing slash only
        entries.append((path, _kind_of_name(path, kind), size if kind == FILE else 0))
    return Listing(diff_id, entries)


def _opaque_xattr(path: str) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def scan_dir(root: str, diff_id: str = "") -> Listing:
    """List an overlay2 layer directory as ``docker save`` would tar it.

    Overlay marks a deleted path with a 0/0 character device and a directory that hides everything
    below it with the ``trusted.overlay.opaque=y`` xattr; the engine's archiver turns these into
    ``.wh.<name>`` and ``<dir>/.wh..wh..opq`` entries, and so does this scan. Names are walked in
    byte order like Go's ``filepath.Walk``, so a hard link's first name carries the size as in the tar.
    """
    entries: list[tuple[str, str, int]] = []
    seen_inodes: set[int] = set()

    def walk(abs_dir: str, rel: str) -> None:
        with os.scandir(abs_dir) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            name = item.name
            path = f"{rel}/{name}" if rel else name
            if item.is_symlink():
                entries.append((path, SYMLINK, 0))
                continue
            is_dir = item.is_dir(follow_symlinks=False)
            st = None if is_dir else item.stat(follow_symlinks=False)
            mode = stat.S_IFDIR if st is None else st.st_mode
            if stat.S_ISDIR(mode):
                entries.append((path, DIR, 0))
                if _opaque_xattr(item.path):
                    entries.append((f"{path}/{OPAQUE}", OPAQUE_K, 0))
                walk(item.path, path)
            elif st is None:
                continue
            elif stat.S_ISCHR(mode) and st.st_rdev == 0:
                parent = _dirname(path)
                wh = f"{parent}/{WHITEOUT}{name}" if parent else f"{WHITEOUT}{name}"
                entries.append((wh, WHITEOUT_K, 0))
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1:
                    if st.st_ino in seen_inodes:
                        entries.append((path, HARDLINK, 0))
                        continue
                    seen_inodes.add(st.st_ino)
                entries.append((path, _kind_of_name(path, FILE), st.st_size))
            elif stat.S_ISLNK(mode):
                entries.append((path, SYMLINK, 0))
            else:
                entries.append((path, OTHER, 0))

    if not os.path.isdir(root):
        raise LayerError(f"layer directory {root} is not readable", hint="use source='save' or 'registry'")
    walk(root, "")
    return Listing(diff_id, entries)


# ---------------------------------------------------------------------------------------------
# dive's numbers, reproduced exactly
# ---------------------------------------------------------------------------------------------
@dataclass
class DiveNumbers:
    efficiency: float
    wasted_bytes: int
    user_size: int
    wasted_user_percent: float
    inefficiencies: list[tuple[str, int, int]]  # (path, count, cumulative size), dive's order


def _sort_key_child_first(path: str) -> tuple[str, ...]:
    return (*path.split("/"), "\U0010ffff")


def _leaf_sizes(leaves: Iterable[str], nodes: Mapping[str, tuple[bool, int]],
                stack: Mapping[str, tuple[bool, int]], subtree_size: Any, *,
                stop_at_missing: bool = False) -> list[tuple[str, int]] | None:
    """dive's size of each leaf; None when a whiteout's target is missing (unless stop_at_missing)."""
    out = []
    for path in leaves:
        base = _basename(path)
        if base.startswith(WHITEOUT):
            target = _join(_dirname(path), base[len(WHITEOUT):])
            below = stack.get(target)
            if below is None:
                if stop_at_missing:
                    break
                return None
            size = subtree_size(target) if below[0] else 0
        else:
            target, size = path, nodes[path][1]
        out.append(("/" + target, size))
    return out


# ---------------------------------------------------------------------------------------------
# What is truly hidden: the overlay stacking, entry by entry
# ---------------------------------------------------------------------------------------------
@dataclass
class Hidden:
    path: str
    size: int
    kind: str
    added_by: int
    removed_by: int
    how: str  # overwritten | deleted | deleted with its directory | under an opaque directory | replaced directory


@dataclass
class Stacking:
    hidden: list[Hidden]
    view: Mapping[str, tuple[int, int, str]]  # the final filesystem: path -> (layer, size, kind)
    added: list[int]        # per layer: bytes of paths new to the image
    replaced: list[int]     # per layer: bytes of paths that already existed below
    hidden_later: list[int]  # per layer: bytes of this layer hidden by a later one
    removes: list[int]      # per layer: bytes of lower layers this layer hides


def _shard(path: str) -> str:
    """The snapshot shard of a path's entry: its top directory for the top two levels (``usr`` for
    ``usr`` and ``usr/lib``), its first two components below (``usr/lib`` for ``usr/lib/x/y``)."""
    i = path.find("/")
    if i < 0:
        return path
    j = path.find("/", i + 1)
    return path[:i] if j < 0 else path[:j]


def _index_shard(parent: str) -> str:
    """The shard of a directory's children index: the shard its children's entries are in."""
    i = parent.find("/")
    if i < 0:
        return parent
    j = parent.find("/", i + 1)
    return parent if j < 0 else parent[:j]


class _LazyView(Mapping):
    """The final filesystem of a report: the part in memory, plus snapshot shards decoded on first use."""

    def __init__(self, loaded: dict[str, tuple[int, int, str]], blobs: Sequence[bytes]) -> None:
        self._view, self._blobs = loaded, list(blobs)

    def _all(self) -> dict[str, tuple[int, int, str]]:
        while self._blobs:
            self._view.update(_decode_shard(self._blobs.pop())[3])
        return self._view

    def __getitem__(self, key: str) -> tuple[int, int, str]:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _decode_shard(blob: bytes) -> tuple[dict, dict, dict, dict, dict]:
    import marshal

    try:
        return marshal.loads(zlib.decompress(blob))
    except (ValueError, EOFError, TypeError, zlib.error):
        raise LayerError("a stacked-state snapshot in the history store is damaged",
                         hint="analyse with cache=False once, or delete the store's layer_states rows") from None


class Stacker:
    """Stacks layers one by one, keeping both dive's bookkeeping and the overlay truth.

    Its state after layers 0..k depends only on those layers, so it is snapshotted (``dumps``) under
    the chain of their diff_ids: re-analysing a version that shares them resumes from the snapshot
    and stacks only the new layers. Snapshots hold plain containers only (``marshal``, no code).

    The per-path state is kept in shards (:func:`_shard`), each compressed on its own; a stacker
    loaded from a snapshot decodes a shard only when a new layer touches it (``_need``), so a new
    version that changes ``/app`` never decodes ``/usr``. Every path entry is in exactly one place:
    the dicts in memory or a shard not decoded yet.
    """

    VERSION = 3
    _SHARDED = ("cum", "dstack", "dkids", "view", "okids")  # keyed by path (cum: "/" + path)
    _GLOBAL = ("multi", "hidden", "sizes", "files", "added", "replaced", "hidden_later", "removes", "cum_total")

    def __init__(self) -> None:
        # dive: per path the cumulative size over leaves (and their sum), and [min, count,
        # cumulative] once a path is seen twice (in that order); the stack of the layers so far with
        # dive's semantics (path -> (is_dir, size)) and its children
        self.cum: dict[str, int] = {}
        self.cum_total = 0
        self.multi: dict[str, list[int]] = {}
        self.dstack: dict[str, tuple[bool, int]] = {}
        self.dkids: dict[str, set[str]] = {}
        # overlay: the visible filesystem (path -> (layer, size, kind)), its children index, the
        # hidden versions (path, size, kind, added_by, removed_by, how), per-layer counters
        self.view: dict[str, tuple[int, int, str]] = {}
        self.okids: dict[str, set[str]] = {}
        self.hidden: list[tuple[str, int, str, int, int, str]] = []
        self.sizes: list[int] = []
        self.files: list[int] = []
        self.added: list[int] = []
        self.replaced: list[int] = []
        self.hidden_later: list[int] = []
        self.removes: list[int] = []
        self._blobs: dict[str, bytes] = {}  # shards of a snapshot not decoded yet

    def dumps(self) -> bytes:
        import marshal

        parts: dict[str, tuple[dict, ...]] = {}
        entry_shard: dict[str, str] = {}  # dstack and view share their keys
        index_shard: dict[str, str] = {}  # and dkids and okids theirs
        for i, name in enumerate(self._SHARDED):
            index = name in ("dkids", "okids")
            cum = name == "cum"
            shard_of = index_shard if index else entry_shard
            for k, v in getattr(self, name).items():
                sk = None if cum else shard_of.get(k)
                if sk is None:
                    sk = _index_shard(k) if index else _shard(k[1:] if cum else k)
                    if not cum:
                        shard_of[k] = sk
                p = parts.get(sk)
                if p is None:
                    p = parts[sk] = ({}, {}, {}, {}, {})
                p[i][k] = v
        keys = list(parts)
        blobs = [zlib.compress(marshal.dumps(parts[k]), 1) for k in keys]
        keys += self._blobs.keys()
        blobs += self._blobs.values()
        head = zlib.compress(marshal.dumps([getattr(self, f) for f in self._GLOBAL]), 1)
        return marshal.dumps((self.VERSION, head, keys, blobs))

    @classmethod
    def loads(cls, blob: bytes) -> Stacker | None:
        """The stacker a snapshot holds (its shards still encoded), or None if it is unreadable or
        from another version."""
        import gc
        import marshal

        # tens of thousands of new containers would set off a full collection of the whole process'
        # heap half-way (they hold no cycles: the collector has nothing to find in them)
        enabled = gc.isenabled()
        gc.disable()
        try:
            version, head, keys, blobs = marshal.loads(blob)
            if version != cls.VERSION:
                return None
            values = marshal.loads(zlib.decompress(head))
        except (ValueError, EOFError, TypeError, zlib.error):
            return None
        finally:
            if enabled:
                gc.enable()
        if len(values) != len(cls._GLOBAL) or len(keys) != len(blobs):
            return None
        st = cls()
        for f, v in zip(cls._GLOBAL, values, strict=True):
            setattr(st, f, v)
        st._blobs = dict(zip(keys, blobs, strict=True))
        return st

    def __len__(self) -> int:
        return len(self.sizes)

    def clone(self) -> Stacker:
        """An independent copy (a few ms, where loading a snapshot takes tens)."""
        st = Stacker.__new__(Stacker)
        for f in (*self._SHARDED, *self._GLOBAL):
            v = getattr(self, f)
            if f in ("dkids", "okids"):
                v = {k: set(c) for k, c in v.items()}
            elif f == "multi":
                v = {k: list(m) for k, m in v.items()}
            elif f != "cum_total":
                v = v.copy()
            setattr(st, f, v)
        st._blobs = dict(self._blobs)
        return st

    def _need(self, listing: Listing) -> None:
        """Decode the shards this layer can touch: its paths' own, their top directory's and the
        root's; a directory's subtree where a layer deletes it, puts a file in its place or makes it
        opaque; all of them for an opaque root."""
        blobs = self._blobs
        if not blobs:
            return
        want = {""}
        prefixes: list[str] = []
        for path, kind, _ in listing.entries:
            i = path.find("/")
            want.add(path if i < 0 else path[:i])
            want.add(_shard(path))
            if kind == DIR:
                continue
            if kind == WHITEOUT_K:
                parent, _, base = path.rpartition("/")
                gone = f"{parent}/{base[len(WHITEOUT):]}" if parent else base[len(WHITEOUT):]
            elif kind == OPAQUE_K:
                gone = path.rpartition("/")[0]
                if not gone:
                    self._load(list(blobs))
                    return
            else:
                gone = path  # a file or link where a directory may have been
            j = gone.find("/")
            if j < 0:  # a top directory: its subtree spans every shard below it
                want.add(gone)
                prefixes.append(gone + "/")
            elif gone.find("/", j + 1) < 0:  # second level: its subtree is the shard named after it
                want.add(gone)
        keys = [k for k in want if k in blobs]
        if prefixes:
            pre = tuple(prefixes)
            keys += [k for k in blobs if k.startswith(pre)]
        self._load(keys)

    def _load(self, keys: Iterable[str]) -> None:
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            for k in keys:
                blob = self._blobs.pop(k, None)
                if blob is None:
                    continue
                for name, part in zip(self._SHARDED, _decode_shard(blob), strict=True):
                    getattr(self, name).update(part)
        finally:
            if enabled:
                gc.enable()

    def add(self, listing: Listing) -> None:
        self._need(listing)
        i = len(self.sizes)
        self.sizes.append(listing.size)
        self.files.append(listing.files)
        for counter in (self.added, self.replaced, self.hidden_later, self.removes):
            counter.append(0)
        self._dive(listing)
        self._overlay(i, listing)

    # -- dive ------------------------------------------------------------------------------------
    def _stack_remove(self, p: str) -> None:
        for c in list(self.dkids.pop(p, ())):
            self._stack_remove(c)
        if p in self.dstack:
            del self.dstack[p]
            s = self.dkids.get(_dirname(p))
            if s is not None:
                s.discard(p)

    def _stack_add(self, p: str, info: tuple[bool, int]) -> None:
        if p not in self.dstack:
            parent = _dirname(p)
            if parent and parent not in self.dstack:
                self._stack_add(parent, (False, 0))
            self.dkids.setdefault(parent, set()).add(p)
        self.dstack[p] = info

    def _subtree_size(self, p: str) -> int:
        total = self.dstack[p][1]
        for c in self.dkids.get(p, ()):
            total += self._subtree_size(c)
        return total

    def _dive(self, listing: Listing) -> None:
        nodes: dict[str, tuple[bool, int]] = {}
        parents: set[str] = set()
        for path, kind, size in listing.entries:
            if kind in (OPAQUE_K, META_K):
                chain = _dirname(path)  # dive drops the entry but still creates its directory
            else:
                nodes[path] = (kind == DIR, size)
                chain = _dirname(path)
                if chain:
                    parents.add(chain)
            while chain and chain not in nodes:  # a node present already has its ancestors
                nodes[chain] = (False, 0)
                up = _dirname(chain)
                if up:
                    parents.add(up)
                chain = up
        leaves = [p for p in nodes if p not in parents]
        visit = _leaf_sizes(leaves, nodes, self.dstack, self._subtree_size)
        if visit is None:  # a whiteout of nothing: dive stops there, in its child-first sorted order
            visit = _leaf_sizes(sorted(leaves, key=_sort_key_child_first), nodes, self.dstack,
                                self._subtree_size, stop_at_missing=True)
        cum, multi, total = self.cum, self.multi, 0
        for key, size in visit or ():
            total += size
            old = cum.get(key)
            if old is None:
                cum[key] = size
                continue
            cum[key] = new = old + size
            m = multi.get(key)
            if m is None:
                multi[key] = [min(old, size), 2, new]
            else:
                m[0] = min(m[0], size)
                m[1] += 1
                m[2] = new
        self.cum_total += total
        # dive's Stack(): whiteouts remove, the others (re)set their payload. Real layers never both
        # remove and add one path, so the order of these updates does not change the result.
        for path, info in nodes.items():
            base = _basename(path)
            if base.startswith(WHITEOUT):
                self._stack_remove(_join(_dirname(path), base[len(WHITEOUT):]))
            else:
                self._stack_add(path, info)

    def dive_numbers(self) -> DiveNumbers:
        """dive's efficiency score and wasted bytes (wagoodman/dive ``filetree/efficiency.go``).

        Per layer, dive visits the *leaves* of the layer's own tree (entries with no child entry in
        that layer; ``.wh..wh..*`` entries are dropped). A leaf's size is its tar size; a ``.wh.``
        leaf counts the whole subtree it deletes if that was a directory in the stack of the layers
        below, else 0. Per path: ``cumulative`` = the sum of those sizes over all layers, ``min`` =
        the smallest. ``efficiency = Σmin / Σcumulative`` (1.0 when empty); ``wasted bytes =
        Σcumulative`` over paths seen in 2+ layers — so the copy that is kept counts too, a deleted
        file counts once, a deleted directory counts 0 (its whiteout is a single leaf) and an opaque
        directory (``rm -rf d && mkdir d``) counts nothing. ``wasted %`` divides by the size of all
        layers but the first. Like dive, a layer's visit stops at a whiteout whose target is missing.
        """
        discovered = self.cum_total
        minimum = discovered - sum(m[2] - m[0] for m in self.multi.values())
        score = 1.0 if discovered == 0 else minimum / discovered
        ineff = sorted(((p, m[1], m[2]) for p, m in self.multi.items()), key=lambda t: t[2])
        wasted = sum(t[2] for t in ineff)
        user = sum(self.sizes[1:])
        return DiveNumbers(score, wasted, user, wasted / user if user else 0.0, ineff)

    # -- overlay ---------------------------------------------------------------------------------
    def _hide(self, p: str, by: int, how: str, subtree_how: str) -> None:
        for c in list(self.okids.pop(p, ())):
            self._hide(c, by, subtree_how, subtree_how)
        rec = self.view.pop(p, None)
        if rec is None:
            return
        s = self.okids.get(_dirname(p))
        if s is not None:
            s.discard(p)
        layer, size, kind = rec
        if kind != DIR:
            self.hidden.append((p, size, kind, layer, by, how))
            self.hidden_later[layer] += size
            self.removes[by] += size

    def _overlay(self, i: int, listing: Listing) -> None:
        view, okids = self.view, self.okids
        for path, kind, _ in listing.entries:
            if kind == OPAQUE_K:
                for c in list(okids.get(_dirname(path), ())):
                    self._hide(c, i, "under an opaque directory", "under an opaque directory")
        for path, kind, size in listing.entries:
            if kind in (OPAQUE_K, META_K):
                continue
            if kind == WHITEOUT_K:
                base = _basename(path)
                target = _join(_dirname(path), base[len(WHITEOUT):])
                rec = view.get(target)
                if rec is not None:
                    how = "deleted directory" if rec[2] == DIR else "deleted"
                    self._hide(target, i, how, "deleted with its directory")
                continue
            old = view.get(path)
            if old is not None:
                if old[2] == DIR and kind != DIR:
                    self._hide(path, i, "replaced directory", "replaced directory")
                elif old[2] != DIR:
                    self._hide(path, i, "overwritten", "overwritten")
                self.replaced[i] += size
            else:
                self.added[i] += size
            view[path] = (i, size, kind)
            okids.setdefault(_dirname(path), set()).add(path)

    def stacking(self) -> Stacking:
        """What is truly hidden: overlayfs' view, and every file version a later layer hides.

        Unlike dive's figure this counts exactly what a container can no longer see but still
        ships: an overwritten file's old version (not the kept one), a deleted file, every file
        under a deleted directory, and everything below an opaque directory (``.wh..wh..opq``,
        written by ``rm -rf d && mkdir d``).
        """
        view = _LazyView(dict(self.view), list(self._blobs.values())) if self._blobs else dict(self.view)
        return Stacking([Hidden(*h) for h in self.hidden], view, list(self.added),
                        list(self.replaced), list(self.hidden_later), list(self.removes))


def stack(listings: Iterable[Listing], start: Stacker | None = None) -> Stacker:
    """Stack ``listings`` on top of ``start`` (a fresh stacker by default)."""
    st = start or Stacker()
    for listing in listings:
        st.add(listing)
    return st


def dive_efficiency(listings: Sequence[Listing]) -> DiveNumbers:
    """dive's numbers for these layers (see :meth:`Stacker.dive_numbers`)."""
    return stack(listings).dive_numbers()


def overlay(listings: Sequence[Listing]) -> Stacking:
    """The overlay truth for these layers (see :meth:`Stacker.stacking`)."""
    return stack(listings).stacking()


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    index: int
    diff_id: str
    instruction: str
    created_by: str
    size: int
    files: int
    bytes_added: int
    bytes_replaced: int
    bytes_hidden_later: int
    bytes_removed: int


def short_instruction(created_by: str) -> str:
    """``RUN apt-get ...`` / ``COPY ...`` from a history entry's created_by (legacy or BuildKit)."""
    import re

    text = " ".join(created_by.split())
    text = re.sub(r" # buildkit$", "", text)
    text = re.sub(r"^\|\d+ (?:\S+=\S* )*", "", text)  # legacy builder: |N ARG=value ... before a RUN
    if text.startswith("/bin/sh -c #(nop) "):
        return text[len("/bin/sh -c #(nop) "):].strip()
    if text.startswith("RUN /bin/sh -c "):
        return "RUN " + text[len("RUN /bin/sh -c "):]
    if text.startswith("/bin/sh -c "):
        return "RUN " + text[len("/bin/sh -c "):]
    return text


def instructions_for(config: Mapping[str, Any], n_layers: int) -> list[tuple[str, str]]:
    """(created_by, created) per non-empty history entry, padded with "(missing)" like dive."""
    out = [(h.get("created_by", ""), h.get("created", "")) for h in config.get("history") or []
           if not h.get("empty_layer")]
    out = out[:n_layers]
    out += [("(missing)", "")] * (n_layers - len(out))
    return out


@dataclass
class LayerReport:
    """The analysis of one image. ``to_frame()`` per layer; ``wasted()`` per hidden file version."""

    image: str
    image_id: str
    source: str
    layers: list[LayerInfo]
    efficiency: float
    wasted_bytes: int
    wasted_percent: float
    user_size: int
    hidden_bytes: int
    hidden: list[Hidden] = field(repr=False)
    inefficient: list[tuple[str, int, int]] = field(repr=False)
    view: Mapping[str, tuple[int, int, str]] = field(repr=False)
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([vars(layer) for layer in self.layers]).set_index("index")

    def wasted(self, *, min_size: int = 1) -> pd.DataFrame:
        """Every file version hidden by a later layer (largest first): the "why" of wasted bytes."""
        import pandas as pd

        cols = ["path", "size", "kind", "added_by", "added_by_instruction", "removed_by",
                "removed_by_instruction", "how"]
        rows = [(("/" + h.path), h.size, h.kind, h.added_by, self.layers[h.added_by].instruction, h.removed_by,
                 self.layers[h.removed_by].instruction, h.how) for h in self.hidden if h.size >= min_size]
        df = pd.DataFrame(rows, columns=cols)
        return df.sort_values(["size", "path"], ascending=[False, True], ignore_index=True)

    def inefficiencies(self) -> pd.DataFrame:
        """dive's list: paths seen in several layers, with the count and the cumulative size."""
        import pandas as pd

        df = pd.DataFrame(self.inefficient, columns=["path", "count", "size"])
        return df.sort_values(["size", "path"], ascending=[False, True], ignore_index=True)

    def summary(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "layers": len(self.layers), "size": self.size,
                "efficiency": self.efficiency, "wasted_bytes": self.wasted_bytes,
                "wasted_percent": self.wasted_percent, "hidden_bytes": self.hidden_bytes}

    def fingerprint(self) -> dict[str, Any]:
        """Everything the analysis found, minus how it was obtained (source, timing, cache)."""
        summary = {k: v for k, v in self.summary().items() if k != "image"}
        return {**summary, "per_layer": [vars(x) for x in self.layers],
                "hidden": sorted((h.path, h.size, h.added_by, h.removed_by, h.how) for h in self.hidden),
                "inefficient": sorted(self.inefficient)}

    def __repr__(self) -> str:
        return (f"<LayerReport {self.image} {len(self.layers)} layers {_human(self.size)}; "
                f"efficiency {self.efficiency:.2%}, wasted {_human(self.wasted_bytes)} (dive), "
                f"hidden {_human(self.hidden_bytes)}; {self.source}, {self.cache_hits} cached, "
                f"{self.cache_misses} read, {self.seconds:.2f}s>")

    def _repr_html_(self) -> str:
        import html

        head = (f"<p><b>{html.escape(self.image)}</b> — {len(self.layers)} layers, {_human(self.size)}; "
                f"efficiency <b>{self.efficiency:.2%}</b>, wasted {_human(self.wasted_bytes)} "
                f"({self.wasted_percent:.1%} of user layers, dive's definition); truly hidden "
                f"{_human(self.hidden_bytes)}</p>")
        return head + self.to_frame().to_html()


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def build_report(image: str, image_id: str, source: str, diff_ids: Sequence[str], stacker: Stacker,
                 config: Mapping[str, Any]) -> LayerReport:
    """The report of an image whose layers ``stacker`` has stacked, with the image config (no I/O)."""
    dive = stacker.dive_numbers()
    st = stacker.stacking()
    hist = instructions_for(config, len(diff_ids))
    infos = [LayerInfo(i, diff_id, short_instruction(hist[i][0]), hist[i][0], stacker.sizes[i], stacker.files[i],
                       st.added[i], st.replaced[i], st.hidden_later[i], st.removes[i])
             for i, diff_id in enumerate(diff_ids)]
    return LayerReport(image=image, image_id=image_id, source=source, layers=infos,
                       efficiency=dive.efficiency, wasted_bytes=dive.wasted_bytes,
                       wasted_percent=dive.wasted_user_percent, user_size=dive.user_size,
                       hidden_bytes=sum(h.size for h in st.hidden), hidden=st.hidden,
                       inefficient=dive.inefficiencies, view=st.view)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Docker-style chain ids: ``chain[k]`` names the stack of layers 0..k."""
    import hashlib

    out, prev = [], ""
    for d in diff_ids:
        prev = d if not prev else "sha256:" + hashlib.sha256(f"{prev} {d}".encode()).hexdigest()
        out.append(prev)
    return out


# ---------------------------------------------------------------------------------------------
# The cache (history store, keyed by diff_id)
# ---------------------------------------------------------------------------------------------
_RECENT: OrderedDict[str, Stacker] = OrderedDict()
RECENT_STATES = 4


def _remember(chain_id: str, stacker: Stacker, *, copy: bool = True) -> None:
    """Keep the state of ``chain_id`` in this process (a copy, unless the caller hands it over:
    ``copy=False`` for a stacker nothing stacks on any more)."""
    _RECENT[chain_id] = stacker.clone() if copy else stacker
    _RECENT.move_to_end(chain_id)
    while len(_RECENT) > RECENT_STATES:
        _RECENT.popitem(last=False)


def forget_recent() -> None:
    """Drop the in-process stacked states (the history store keeps its snapshots)."""
    _RECENT.clear()


class LayerCache:
    """Layer listings in the history store, keyed by diff_id (content-addressed)."""

    def __init__(self, history: History) -> None:
        self.history = history

    def get(self, diff_ids: Iterable[str]) -> dict[str, Listing]:
        ids = list(dict.fromkeys(diff_ids))
        out: dict[str, Listing] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" for _ in chunk)
            for diff_id, blob in self.history.execute(
                    f"SELECT diff_id, listing FROM layer_cache WHERE diff_id IN ({marks})", chunk):
                out[diff_id] = Listing.unpack(diff_id, blob)
        return out

    def snapshot(self, chain: Sequence[str]) -> tuple[Stacker | None, int]:
        """The longest stacked prefix of ``chain`` that was snapshotted, and its length.

        A state is a pure function of its chain id, so the few most recent ones are also kept in
        this process (a notebook re-analysing its next version skips even the snapshot load).
        """
        if not chain:
            return None, 0
        for k in range(len(chain) - 1, -1, -1):
            hot = _RECENT.get(chain[k])
            if hot is not None:
                _RECENT.move_to_end(chain[k])
                return hot.clone(), k + 1
        marks = ",".join("?" for _ in chain)
        rows = self.history.execute(f"SELECT n_layers, state FROM layer_states WHERE chain_id IN ({marks})"
                                    " ORDER BY n_layers DESC LIMIT 1", list(chain))
        if rows:
            st = Stacker.loads(rows[0][1])
            if st is not None and len(st) == rows[0][0]:
                return st, rows[0][0]
        return None, 0

    def put_snapshot(self, chain_id: str, stacker: Stacker) -> None:
        _remember(chain_id, stacker)
        with self.history.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO layer_states (chain_id, n_layers, state, ts) VALUES (?, ?, ?, ?)",
                         (chain_id, len(stacker), stacker.dumps(), time.time()))

    def has_snapshot(self, chain_id: str) -> bool:
        return bool(self.history.execute("SELECT 1 FROM layer_states WHERE chain_id=?", (chain_id,)))

    def put(self, listing: Listing, *, source: str, seconds: float) -> None:
        self.put_many([(listing, seconds)], source=source)

    def put_many(self, listings: Sequence[tuple[Listing, float]], *, source: str) -> None:
        """Cache these (listing, seconds it took) in one transaction."""
        if not listings:
            return
        now = time.time()
        rows = [(x.diff_id, x.size, x.files, len(x.entries), x.pack(), source, seconds, now) for x, seconds in listings]
        with self.history.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO layer_cache (diff_id, size, files, entries, listing, source, scan_s, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (the engine's save stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = memoryview(next(self._it))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.bytes_read += n
        return n


class _Counting(io.RawIOBase):
    """A raw file over an engine response, counting the bytes read."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        self.bytes_read += n
        return n


class _Peekable:
    """A member's data as a file for :func:`scan_tar` (no extra buffering: reads go straight through)."""

    def __init__(self, data: _Bounded) -> None:
        self.data = data

    def peek(self, n: int) -> bytes:
        return b""  # layer tars inside a save stream are never compressed

    def read(self, n: int = -1) -> bytes:
        return self.data.read(n)

    def readinto(self, b: Any) -> int:
        return self.data.readinto(b)


class _HTTP10(http.client.HTTPConnection):
    """HTTP/1.0 over an already connected socket: the engine then sends a body as is, to the end of
    the connection, where HTTP/1.1 would cut it into chunks (about 32 kB each from dockerd) that
    Python de-chunks one by one (urllib3/http.client: a third of the save path's CPU)."""

    _http_vsn, _http_vsn_str = 10, "HTTP/1.0"

    def __init__(self, sock: socket.socket) -> None:
        super().__init__("localhost")
        self.sock = sock

    def connect(self) -> None:  # pragma: no cover - connected in __init__
        raise OSError("already connected")


def _local_get(engine: Engine, path: str) -> http.client.HTTPResponse | None:
    """``GET /v<api>/path`` straight on a local engine's unix socket (HTTP/1.0, bounded by the
    engine's timeout), or None when the engine is not local or did not answer 200: the caller
    then goes through docker-py, which reports the failure as the usual nbops error."""
    address = engine.address
    if not address.startswith("unix://"):
        return None
    from urllib.parse import quote

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(engine.timeout)
    try:
        sock.connect(address[len("unix://"):])
        conn = _HTTP10(sock)
        conn.request("GET", f"/v{engine.api_version}{quote(path, safe='/:')}")  # as docker-py quotes
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException):
        sock.close()
        return None
    if resp.status != 200:
        resp.close()
        sock.close()
        return None
    sock.close()  # the response's file keeps the connection open until it is closed
    return resp


def _inspect(engine: Engine, image: str) -> dict[str, Any]:
    resp = _local_get(engine, f"/images/{image}/json")
    if resp is not None:
        try:
            with resp:
                return json.loads(resp.read())
        except (OSError, http.client.HTTPException, ValueError):
            pass  # ask again through docker-py, which reports a failure properly
    return engine.call(f"inspect image {image}", engine.api.inspect_image, image)


def _read_config_file(engine: Engine, info: Mapping[str, Any]) -> dict[str, Any] | None:
    driver = (info.get("GraphDriver") or {}).get("Name", "")
    root = engine.info.get("DockerRootDir", "")
    hexid = info["Id"].split(":", 1)[-1]
    path = os.path.join(root, "image", driver, "imagedb", "content", "sha256", hexid)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError:
        return None


def layer_dirs(info: Mapping[str, Any], need: Iterable[int] | None = None) -> list[str] | None:
    """The overlay2 diff directories of an image, bottom layer first, or None if those it ``need``s
    (by index; default all) are not readable here."""
    gd = info.get("GraphDriver") or {}
    if gd.get("Name") != "overlay2":
        return None
    data = gd.get("Data") or {}
    upper = data.get("UpperDir")
    if not upper:
        return None
    lower = [d for d in (data.get("LowerDir") or "").split(":") if d]
    dirs = [*reversed(lower), upper]
    if len(dirs) != len((info.get("RootFS") or {}).get("Layers") or []):
        return None
    wanted = range(len(dirs)) if need is None else need
    if not all(os.access(dirs[i], os.R_OK | os.X_OK) for i in wanted):
        return None
    return dirs


def _recorded_config(store: History, image_id: str, n_layers: int) -> dict[str, Any] | None:
    """The layers' history of an image analysed before (the engine API has no way to read the config
    and ``GET /images/{id}/history`` cannot tell an empty layer from a layer that only deletes)."""
    rows = store.execute(
        "SELECT l.created_by FROM analysis_layers l WHERE l.analysis_id = (SELECT id FROM layer_analyses"
        " WHERE image_id=? ORDER BY ts DESC LIMIT 1) ORDER BY l.idx", (image_id,))
    if len(rows) != n_layers:
        return None
    return {"history": [{"created_by": r[0] or ""} for r in rows]}


def _scan_save(engine: Engine, ref: str) -> tuple[dict[str, Listing], dict[str, Any], int]:
    """Stream ``docker save ref`` once; list every layer tar in it. Returns (listings, config, bytes)."""
    local = _local_get(engine, f"/images/{ref}/get")
    if local is not None:  # unchunked, read straight from the socket
        raw: _IterReader | _Counting = _Counting(local)
    else:
        raw = _IterReader(engine.call(f"save {ref}", engine.api.get_image, ref, chunk_size=1 << 20))
    by_name: dict[str, Listing] = {}
    jsons: dict[str, bytes] = {}
    try:
        for name, _flag, _size, data in iter_tar(io.BufferedReader(raw, 1 << 20)):
            if name.endswith("layer.tar"):
                by_name[name] = scan_tar(_Peekable(data))
            elif name.endswith(".json") and "/" not in name:
                jsons[name] = data.read()
    except LayerError as exc:
        raise LayerError(f"the save stream of {ref} is not a readable tar: {exc}",
                         hint="is the engine's image store intact? try source='registry'") from exc
    except OSError as exc:  # the socket: a timeout or a reset half-way
        from .engine import translate

        raise translate(exc, engine.address, f"save {ref}") from exc
    finally:
        if local is not None:
            local.close()
    try:
        manifest = json.loads(jsons["manifest.json"])[0]
        config = json.loads(jsons[manifest["Config"]])
    except (KeyError, IndexError, ValueError) as exc:
        raise LayerError(f"the save stream of {ref} has no manifest.json/config (format not supported)",
                         hint="nbops reads the docker-archive format of engines up to 24.x") from exc
    diff_ids = config["rootfs"]["diff_ids"]
    listings: dict[str, Listing] = {}
    for name, diff_id in zip(manifest["Layers"], diff_ids, strict=True):
        lst = by_name[name]
        lst.diff_id = diff_id
        listings[diff_id] = lst
    return listings, config, raw.bytes_read


def _names_registry(ref: str) -> bool:
    first, _, rest = ref.partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def parse_registry_ref(ref: str, registry: str | None = None) -> tuple[str, str, str]:
    """(registry host:port, repository, tag or digest) from ``host:port/repo:tag`` or ``repo@sha256:..``."""
    if registry is None:
        if not _names_registry(ref):
            raise ConfigError(f"{ref!r} names no registry", hint="write HOST:PORT/REPO:TAG or pass registry=")
        registry, _, ref = ref.partition("/")
    if "@" in ref:
        repo, reference = ref.split("@", 1)
    else:
        repo, _, reference = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    return registry, repo, reference


_MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])


class _Registry:
    def __init__(self, host: str) -> None:
        import requests

        self.host = host
        self.base = f"http://{host}/v2"
        self.session = requests.Session()

    def get(self, path: str, *, stream: bool = False, accept: str | None = None) -> Any:
        import requests

        url = f"{self.base}/{path}"
        try:
            r = self.session.get(url, stream=stream, timeout=HTTP_TIMEOUT,
                                 headers={"Accept": accept} if accept else {})
        except requests.RequestException as exc:
            raise RegistryError(f"the registry at {self.host} is unreachable: {exc}",
                                hint="is the lab up (`nbops lab status`)?", registry=self.host) from exc
        if r.status_code == 404:
            raise NotFound(f"{path} not found in the registry at {self.host}",
                           hint="check the repository and tag (was it pushed?)", registry=self.host)
        if r.status_code >= 400:
            raise RegistryError(f"the registry at {self.host} answered {r.status_code} for {path}",
                                registry=self.host, status=r.status_code)
        return r

    def manifest(self, repo: str, reference: str) -> dict[str, Any]:
        for _ in range(3):  # an index points to a manifest: at most one hop, bounded anyway
            m = self.get(f"{repo}/manifests/{reference}", accept=_MANIFEST_TYPES).json()
            if "manifests" not in m:
                return m
            pick = next((x for x in m["manifests"] if (x.get("platform") or {}).get("architecture") == "amd64"),
                        m["manifests"][0])
            reference = pick["digest"]
        raise RegistryError(f"{repo}@{reference}: nested image indexes are not supported", registry=self.host)


# ---------------------------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------------------------
def analyze(image: str, *, source: str = "auto", engine: Engine | None = None, registry: str | None = None,
            history: History | None = None, cache: bool = True, record: bool = True) -> LayerReport:
    """Analyse ``image`` (``repo:tag``, an id, or ``host:port/repo:tag`` with ``source='registry'``).

    ``source``: ``dirs`` (overlay2 layer directories of a local engine), ``save`` (the engine's save
    stream), ``registry`` (layer blobs by digest), or ``auto`` (dirs if readable, else save; registry
    when the reference names one and the engine lacks it). Known layers come from the cache.
    """
    return _analyze(image, source=source, engine=engine, registry=registry, history=history, cache=cache,
                    record=record)


def _analyze(image: str, *, source: str = "auto", engine: Engine | None = None, registry: str | None = None,
             history: History | None = None, cache: bool = True, record: bool = True,
             info: Mapping[str, Any] | None = None) -> LayerReport:
    """:func:`analyze`, with the engine's inspect of ``image`` when the caller already has it."""
    from . import history as history_mod

    if source not in SOURCES:
        raise ConfigError(f"unknown layer source {source!r}", hint=f"use one of {', '.join(SOURCES)}")
    if not image or not isinstance(image, str):
        raise ConfigError("no image given", hint="name an image as repo:tag, an id, or host:port/repo:tag")
    t0 = time.perf_counter()
    store = history if history is not None else history_mod.default()
    lc = LayerCache(store) if cache else None
    if source == "registry" or (source == "auto" and registry is not None):
        rep = _analyze_registry(image, registry, lc)
    else:
        if engine is None:
            from .engine import Engine as _Engine

            engine = _Engine.connect()
        try:
            info = info if info is not None else _inspect(engine, image)
        except NotFound:
            if source == "auto" and _names_registry(image):
                rep = _analyze_registry(image, None, lc)
                rep.seconds = time.perf_counter() - t0
                _record(store, rep, record)
                return rep
            raise
        rep = _analyze_engine(engine, image, info, source, lc)
    rep.seconds = time.perf_counter() - t0
    _record(store, rep, record)
    return rep


@dataclass
class _Plan:
    """What an analysis needs: a snapshot to resume from (covering ``done`` layers), cached listings
    for the rest (``known``), and the layers to read (``missing``)."""

    diff_ids: list[str]
    chain: list[str]
    start: Stacker | None
    done: int
    known: dict[str, Listing]
    missing: list[str]

    def finish(self, image: str, image_id: str, source: str, fresh: Mapping[str, Listing],
               config: Mapping[str, Any], lc: LayerCache | None) -> LayerReport:
        st = self.start or Stacker()
        n = len(self.diff_ids)
        for i in range(self.done, n):
            if lc is not None and i == n - 1 and i > 0 and not lc.has_snapshot(self.chain[i - 1]):
                lc.put_snapshot(self.chain[i - 1], st)  # the next version usually changes the last layer
            d = self.diff_ids[i]
            st.add(fresh.get(d) or self.known[d])
        if lc is not None and n and self.done < n:
            # the final state stays in this process only: in the store, the snapshot below the last
            # layer plus that one cached layer is as quick to resume from as a snapshot of it, and a
            # snapshot costs more to write than such a resume
            _remember(self.chain[-1], st, copy=False)  # st is final: the report copies what it keeps
        rep = build_report(image, image_id, source, self.diff_ids, st, config)
        rep.cache_hits = n - len(self.missing)
        rep.cache_misses = len(self.missing)
        return rep


def _plan(lc: LayerCache | None, diff_ids: Sequence[str]) -> _Plan:
    chain = chain_ids(diff_ids)
    start, done = lc.snapshot(chain) if lc else (None, 0)
    rest = list(diff_ids[done:])
    known = lc.get(rest) if lc else {}
    return _Plan(list(diff_ids), chain, start, done, known, [d for d in dict.fromkeys(rest) if d not in known])


def _analyze_engine(engine: Engine, image: str, info: Mapping[str, Any], source: str,
                    lc: LayerCache | None) -> LayerReport:
    image_id = info["Id"]
    diff_ids = list((info.get("RootFS") or {}).get("Layers") or [])
    ref = image_id  # never a bare repository: `docker save repo` exports every tag
    plan = _plan(lc, diff_ids)
    missing = plan.missing
    to_read = set(missing)
    dirs = (layer_dirs(info, [i for i, d in enumerate(diff_ids) if d in to_read])
            if source in ("auto", "dirs") else None)
    if source == "dirs" and dirs is None:
        raise LayerError(f"the layer directories of {image} are not readable here",
                         hint="run as root on the engine's machine (overlay2), or use source='save'")
    config = _read_config_file(engine, info) if dirs is not None else None
    used = "dirs" if dirs is not None else "save"
    fresh: dict[str, Listing] = {}
    if dirs is not None:
        took: list[tuple[Listing, float]] = []
        for diff_id, d in zip(diff_ids, dirs, strict=True):
            if diff_id in missing and diff_id not in fresh:
                t = time.perf_counter()
                fresh[diff_id] = scan_dir(d, diff_id)
                took.append((fresh[diff_id], time.perf_counter() - t))
        if lc:
            lc.put_many(took, source="dirs")  # one transaction for the whole analysis
    if config is None and not missing and lc is not None:
        config = _recorded_config(lc.history, image_id, len(diff_ids))
    if dirs is None and (missing or config is None):
        t = time.perf_counter()
        got, config, _ = _scan_save(engine, ref)
        per = (time.perf_counter() - t) / max(1, len(got))
        for diff_id in missing:
            if diff_id not in got:
                raise LayerError(f"layer {diff_id} is missing from the save stream of {ref}")
            fresh[diff_id] = got[diff_id]
        if lc:
            lc.put_many([(got[d], per) for d in missing], source="save")
    return plan.finish(image, image_id, used, fresh, config or {}, lc)


def _analyze_registry(image: str, registry: str | None, lc: LayerCache | None) -> LayerReport:
    host, repo, reference = parse_registry_ref(image, registry)
    reg = _Registry(host)
    manifest = reg.manifest(repo, reference)
    config_digest = manifest["config"]["digest"]
    config = reg.get(f"{repo}/blobs/{config_digest}").json()
    diff_ids = list(config["rootfs"]["diff_ids"])
    blobs = [x["digest"] for x in manifest["layers"]]
    if len(blobs) != len(diff_ids):
        raise LayerError(f"{image}: the manifest lists {len(blobs)} layers, the config {len(diff_ids)}")
    plan = _plan(lc, diff_ids)
    missing = plan.missing
    fresh: dict[str, Listing] = {}
    for diff_id, blob in zip(diff_ids, blobs, strict=True):
        if diff_id in missing and diff_id not in fresh:
            t = time.perf_counter()
            r = reg.get(f"{repo}/blobs/{blob}", stream=True)
            try:
                fresh[diff_id] = scan_tar(_IterReader(r.iter_content(1 << 20)), diff_id)
            except (LayerError, OSError, EOFError) as exc:
                raise LayerError(f"blob {blob} of {image} is not a readable layer tar: {exc}") from exc
            finally:
                r.close()
            if lc:
                lc.put(fresh[diff_id], source="registry", seconds=time.perf_counter() - t)
    return plan.finish(image, config_digest, "registry", fresh, config, lc)


def _record(store: History, rep: LayerReport, record: bool) -> None:
    if not record:
        return
    from .history import current_run_id

    row = {"ts": time.time(), "run_id": current_run_id(), "image": rep.image, "image_id": rep.image_id, "source": rep.source,
           "size": rep.size, "n_layers": len(rep.layers), "efficiency": rep.efficiency,
           "wasted_bytes": rep.wasted_bytes, "wasted_percent": rep.wasted_percent,
           "hidden_bytes": rep.hidden_bytes, "cache_hits": rep.cache_hits, "cache_misses": rep.cache_misses,
           "duration_s": rep.seconds}
    with store.transaction() as conn:  # the analysis and its layers together, the layers in one statement
        aid = store._insert(conn, "layer_analyses", row)
        conn.executemany(
            "INSERT INTO analysis_layers (analysis_id, idx, diff_id, instruction, created_by, size, files,"
            " bytes_added, bytes_hidden_later, bytes_removed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(aid, x.index, x.diff_id, x.instruction, x.created_by, x.size, x.files, x.bytes_added,
              x.bytes_hidden_later, x.bytes_removed) for x in rep.layers])


# ---------------------------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerDiff:
    """What changed from image ``a`` to image ``b``: files added, removed, changed, and by which layer."""

    a: LayerReport
    b: LayerReport
    rows: list[tuple[str, str, int | None, int | None, int | None, str]]
    shared_layers: int

    def to_frame(self) -> pd.DataFrame:
        """One row per changed path: change, size in a and b, the layer of b that made it."""
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=["path", "change", "size_a", "size_b", "layer_b", "instruction_b"])
        df["delta"] = df["size_b"].fillna(0).astype("int64") - df["size_a"].fillna(0).astype("int64")
        return df.sort_values(["change", "path"], ignore_index=True)

    def by_layer(self) -> pd.DataFrame:
        """Per layer of ``b``: whether ``a`` has it, and the files/bytes it added, changed, removed."""
        import pandas as pd

        a_ids = {x.diff_id for x in self.a.layers}
        df = self.to_frame()
        out = []
        for x in self.b.layers:
            mine = df[df["layer_b"] == x.index]
            out.append({"layer": x.index, "instruction": x.instruction, "in_a": x.diff_id in a_ids,
                        "size": x.size, **{f"{c}_files": int((mine["change"] == c).sum())
                                           for c in ("added", "changed", "rewritten")},
                        "bytes_delta": int(mine["delta"].sum())})
        removed = df[df["change"] == "removed"]
        out.append({"layer": None, "instruction": "(removed from a)", "in_a": True, "size": 0,
                    "added_files": 0, "changed_files": 0, "rewritten_files": 0,
                    "bytes_delta": int(removed["delta"].sum())})
        return pd.DataFrame(out)

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r[1]] = counts.get(r[1], 0) + 1
        return {"a": self.a.image, "b": self.b.image, "size_delta": self.b.size - self.a.size,
                "shared_layers": self.shared_layers, "new_layers": len(self.b.layers) - self.shared_layers,
                **{k: counts.get(k, 0) for k in ("added", "removed", "changed", "rewritten")}}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<LayerDiff {s['a']} -> {s['b']}: {s['size_delta']:+d} bytes; {s['shared_layers']} shared "
                f"layers, {s['new_layers']} new; {s['added']} added, {s['removed']} removed, "
                f"{s['changed']} changed, {s['rewritten']} rewritten>")

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(repr(self))}</p>" + self.by_layer().to_html(index=False)


def diff(a: str, b: str, **kwargs: Any) -> LayerDiff:
    """Compare two images file by file (the stacked filesystems), attributing changes to b's layers.

    ``changed``: the size or type differs; ``rewritten``: same size but written again by another
    layer (the listing holds no content hashes, so the content may or may not differ).
    Keyword arguments go to :func:`analyze` (both analyses share the layer cache).
    """
    ra, rb = analyze(a, **kwargs), analyze(b, **kwargs)
    rows: list[tuple[str, str, int | None, int | None, int | None, str]] = []
    for path in sorted(set(ra.view) | set(rb.view)):
        va, vb = ra.view.get(path), rb.view.get(path)
        if vb is not None and vb[2] == DIR and (va is None or va[2] == DIR):
            continue
        if va is not None and va[2] == DIR and vb is None:
            continue
        if va is None:
            change = "added"
        elif vb is None:
            change = "removed"
        elif va[2] != vb[2] or va[1] != vb[1]:
            change = "changed"
        elif ra.layers[va[0]].diff_id != rb.layers[vb[0]].diff_id:
            change = "rewritten"
        else:
            continue
        lb = vb[0] if vb is not None else None
        rows.append(("/" + path, change, va[1] if va else None, vb[1] if vb else None, lb,
                     rb.layers[lb].instruction if lb is not None else ""))
    shared = sum(1 for x, y in zip(ra.layers, rb.layers, strict=False) if x.diff_id == y.diff_id)
    return LayerDiff(ra, rb, rows, shared)


# ---------------------------------------------------------------------------------------------
# trend
# ---------------------------------------------------------------------------------------------
def _version_label(tags: Any, image_id: str) -> str:
    try:
        value = json.loads(tags) if isinstance(tags, str) and tags.startswith("[") else tags
    except ValueError:
        value = tags
    if isinstance(value, list) and value:
        return str(value[0])
    if isinstance(value, str) and value:
        return value.split(",")[0].strip()
    return (image_id or "").split(":")[-1][:12]


def trend(name: str, *, history: History | None = None, engine: Engine | None = None,
          analyze_missing: bool = True, source: str = "auto", limit: int | None = None) -> pd.DataFrame:
    """Every recorded build of ``name`` (history ``builds`` rows), one row per (build, layer).

    Columns: build_id, ts, time, version, image_id, layer, diff_id, instruction, size, total_size.
    Versions not analysed yet are analysed now when ``analyze_missing`` (only their new layers are
    read: the rest come from the cache); builds whose image is gone keep a single row with the size
    recorded at build time and ``layer`` = NaN.

    Two indexed queries (the builds with their latest analysis; that analysis' layers) joined in
    pandas: 10,000 builds x 5 layers in well under 0.2 s (``bench/trend_bench.py``).
    """
    from . import history as history_mod

    store = history if history is not None else history_mod.default()
    df = _trend_frame(store, name, limit)
    if analyze_missing and not df.empty:
        # in build order: a version shares the most layers with the one before it
        missing = list(dict.fromkeys(df.loc[df["layer"].isna(), "image_id"]))
        if missing:
            if engine is None and source != "registry":
                from .engine import Engine as _Engine

                engine = _Engine.connect()
            for image_id, info in _inspect_ahead(engine, missing, source):
                if isinstance(info, NotFound):
                    continue
                _analyze(image_id, engine=engine, history=store, source=source, info=info)
            df = _trend_frame(store, name, limit)
    return df


def _inspect_ahead(engine: Engine | None, image_ids: Sequence[str], source: str,
                   ahead: int = 4) -> Iterator[tuple[str, Any]]:
    """``(image_id, inspect)`` in order, the engine asked up to ``ahead`` images in advance on other
    threads (its answer takes milliseconds of waiting, which the analyses in between fill). An image
    the engine does not know gives its NotFound; an inspect is None where the analysis asks itself."""
    if engine is None or source == "registry" or len(image_ids) < 2:
        yield from ((i, None) for i in image_ids)
        return
    from concurrent.futures import ThreadPoolExecutor

    def one(image_id: str) -> Any:
        try:
            return _inspect(engine, image_id)
        except NotFound as exc:
            return exc
        except Exception:  # noqa: BLE001 - the analysis asks again and reports it as usual
            return None

    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="nbops-inspect") as pool:
        pending: deque[Any] = deque()
        todo = iter(image_ids)
        for image_id in itertools.islice(todo, ahead):
            pending.append((image_id, pool.submit(one, image_id)))
        while pending:
            image_id, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(one, nxt)))
            yield image_id, fut.result()


_TREND_COLUMNS = ["build_id", "ts", "time", "version", "image_id", "layer", "diff_id", "instruction", "size",
                  "total_size"]


def _version_labels(tags: Sequence[Any], image_ids: Sequence[str]) -> list[str]:
    """:func:`_version_label` of each build; a plain first tag (the usual case) needs no call."""
    out = []
    for t, i in zip(tags, image_ids, strict=True):
        if t.__class__ is str and t and t[0] != "[":
            out.append(t.split(",", 1)[0].strip())
        else:
            out.append(_version_label(t, i))
    return out


def _trend_frame(store: History, name: str, limit: int | None) -> pd.DataFrame:
    import pandas as pd

    where = "b.name = ? AND b.ok = 1 AND b.image_id IS NOT NULL"
    params: list[Any] = [name]
    if limit is not None:
        where += (" AND b.id IN (SELECT id FROM builds b WHERE b.name = ? AND b.ok = 1 AND b.image_id IS NOT NULL"
                  " ORDER BY b.ts DESC, b.id DESC LIMIT ?)")
        params += [name, int(limit)]
    # 1. the builds (index builds_name_ts), each with the id of its image's latest analysis (MAX(id)
    #    straight from index layer_analyses_latest, migration 0009_trend_indexes) and
    #    the first of its tags (SQLite reads the JSON, not Python)
    rows = store.execute(
        "SELECT b.id, b.ts, CASE WHEN json_valid(b.tags) AND json_type(b.tags) = 'array'"
        " THEN json_extract(b.tags, '$[0]') ELSE b.tags END, b.image_id, b.size,"
        " ifnull((SELECT MAX(a.id) FROM layer_analyses a WHERE a.image_id = b.image_id), -1)"
        f" FROM builds b WHERE {where} ORDER BY b.ts, b.id", params)
    if not rows:
        return pd.DataFrame(columns=_TREND_COLUMNS)
    build_id, ts, tags, image_id, build_size, aid = (list(c) for c in zip(*rows, strict=True))
    builds = pd.DataFrame({"build_id": build_id, "ts": ts,
                           "version": _version_labels(tags, image_id),
                           "image_id": image_id, "build_size": build_size, "aid": aid})
    # 2. the layers of those analyses, in one query (the ids passed as one JSON array)
    ids = sorted({a for a in aid if a >= 0})
    lay = _trend_layers(store, ids)
    # 3. one row per (build, layer); a build with no analysed layers keeps one row (layer NaN)
    if lay.empty:  # no layer at all: NULLs, as SQLite's LEFT JOIN gives them
        df = builds.assign(**{c: pd.Series([None] * len(builds), dtype=object) for c in _LAYER_COLUMNS[1:]})
    else:
        df = builds.merge(lay, on="aid", how="left", sort=False)
        mixed = [c for c in _LAYER_COLUMNS[1:] if df[c].dtype == object]  # e.g. a BLOB among texts
        if mixed:  # the merge fills those with NaN where SQLite's LEFT JOIN gives NULL (None)
            df.loc[~df["aid"].isin(lay["aid"]), mixed] = None
    df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    df["size"] = df["size"].where(df["layer"].notna(), df["build_size"])
    df["total_size"] = df.groupby("build_id", sort=False)["size"].transform("sum")
    return df[_TREND_COLUMNS]


_LAYER_COLUMNS = ("aid", "layer", "diff_id", "instruction", "size")


def _trend_layers(store: History, ids: Sequence[int]) -> pd.DataFrame:
    """The layers of the analyses ``ids`` (ordered by analysis, layer) as a frame.

    Fetched as one row of whole columns (``group_concat``; ints parsed by numpy, the text columns
    split on NUL): 50,000 rows cost one string per column instead of a Python tuple per row. When a
    value would not round-trip that way (a NULL, a non-integer, a NUL inside a text), the same
    layers are fetched row by row instead.
    """
    import numpy as np
    import pandas as pd

    if not ids:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "aid" else object) for c in _LAYER_COLUMNS})
    pick = "FROM analysis_layers WHERE analysis_id IN (SELECT value FROM json_each(?))"
    param = (json.dumps(list(ids)),)
    n, plain, aids, idx, size, diff_ids, instructions = store.execute(  # in any order: sorted below
        # both TEXT columns (numbers become text in them): a value is text iff it sorts below the empty
        # BLOB (NULL compares to nothing, a BLOB does not)
        "SELECT count(*), total(diff_id < x'' AND instruction < x''),"
        " group_concat(analysis_id), group_concat(idx), group_concat(size), group_concat(diff_id, char(0)),"
        f" group_concat(instruction, char(0)) {pick}", param)[0]
    if n and plain == n:
        texts = (diff_ids.split("\0"), instructions.split("\0"))
        if len(texts[0]) == n and len(texts[1]) == n:
            try:  # a non-integer does not parse; a NULL (skipped by group_concat) leaves a column short
                cols = [np.fromstring(v or "", dtype=np.int64, sep=",") for v in (aids, idx, size)]
            except ValueError:
                cols = []
            if cols and all(len(c) == n for c in cols):
                a, x = cols[0], cols[1]
                texts_np = [np.asarray(t, dtype=object) for t in texts]
                # by analysis, layer (unique: the primary key); the index usually gives that order already
                if not ((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (x[1:] > x[:-1]))).all():
                    order = np.lexsort((x, a))
                    cols = [c[order] for c in cols]
                    texts_np = [t[order] for t in texts_np]
                return pd.DataFrame({"aid": cols[0], "layer": cols[1], "diff_id": texts_np[0],
                                     "instruction": texts_np[1], "size": cols[2]})
    rows = store.execute(f"SELECT analysis_id, idx, diff_id, instruction, size {pick} ORDER BY analysis_id, idx",
                         param)
    lcols = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in _LAYER_COLUMNS]
    lay = pd.DataFrame(dict(zip(_LAYER_COLUMNS, lcols, strict=True)))
    return lay.astype({"aid": "int64"}) if lay.empty else lay


# ---------------------------------------------------------------------------------------------
# CI gate (dive's .dive-ci rules)
# ---------------------------------------------------------------------------------------------
_RULES = {
    "lowestEfficiency": "lowest_efficiency", "highestWastedBytes": "highest_wasted_bytes",
    "highestUserWastedPercent": "highest_user_wasted_percent", "highestHiddenBytes": "highest_hidden_bytes",
}
DIVE_DEFAULT_RULES = {"lowest_efficiency": 0.9, "highest_wasted_bytes": "disabled",
                      "highest_user_wasted_percent": 0.1}
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "ki": 1024, "mib": 1024**2, "mi": 1024**2,
          "gib": 1024**3, "gi": 1024**3, "tib": 1024**4, "ti": 1024**4}


def parse_bytes(value: Any) -> int:
    """``20MB`` = 20·1000², ``20MiB`` = 20·1024², plain numbers are bytes (like dive's humanize)."""
    import re

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{value!r} is not a size", hint="write bytes like 20MB, 1.5GiB or 1048576")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def load_rules(rules: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """Rules from a mapping, a ``.dive-ci`` YAML file (its ``rules:`` section), or dive's defaults."""
    if rules is None:
        return dict(DIVE_DEFAULT_RULES)
    if not isinstance(rules, Mapping):
        import yaml

        try:
            with open(rules) as f:
                data = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read the rules file {rules}: {exc.strerror}",
                              hint="pass a .dive-ci file or a dict of rules") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"the rules file {rules} is not valid YAML: {exc}") from exc
        rules = data.get("rules", data) if isinstance(data, Mapping) else {}
    out: dict[str, Any] = {}
    for key, value in rules.items():
        name = _RULES.get(key, key)
        if name not in _RULES.values():
            raise ConfigError(f"unknown gate rule {key!r}",
                              hint="use lowestEfficiency, highestWastedBytes, highestUserWastedPercent "
                                   "(dive's names) or highestHiddenBytes")
        out[name] = value
    return out


@dataclass
class GateResult:
    """The verdict of :func:`gate`: ``bool(result)`` is True when every rule passed."""

    image: str
    rows: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(r["status"] != "FAIL" for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def __bool__(self) -> bool:
        return self.passed

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "FAIL"]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["rule", "threshold", "actual", "status", "why"])

    def table(self) -> str:
        """The rules as a plain-text table (what a CI log shows)."""
        keys = ("rule", "threshold", "actual", "status", "why")
        grid = [list(keys)] + [[str(r[k]) for k in keys] for r in self.rows]
        widths = [max(len(row[i]) for row in grid) for i in range(len(keys))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in grid)

    def __repr__(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL ({len(self.failed())} of {len(self.rows)} rules)"
        return f"<GateResult {self.image}: {verdict}>\n{self.table()}"

    def _repr_html_(self) -> str:
        import html

        verdict = "passed" if self.passed else "<b style='color:#b00'>FAILED</b>"
        return f"<p>layer gate for {html.escape(self.image)}: {verdict}</p>" + self.to_frame().to_html(index=False)


def gate(report: LayerReport, rules: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> GateResult:
    """Check a report against dive-style CI rules (``.dive-ci``); ``"disabled"`` skips a rule.

    lowest_efficiency: fail when efficiency < threshold; highest_wasted_bytes: fail when dive's
    wasted bytes > threshold; highest_user_wasted_percent: fail when wasted / user-layer bytes >
    threshold (a ratio, 0.1 = 10%); highest_hidden_bytes (nbops): fail when truly hidden bytes > threshold.
    """
    rows = []
    for name, raw in load_rules(rules).items():
        if str(raw).strip().lower() == "disabled":
            rows.append({"rule": name, "threshold": "disabled", "actual": "", "status": "skip", "why": ""})
            continue
        try:
            if name in ("lowest_efficiency", "highest_user_wasted_percent"):
                limit: float = float(raw)
            else:
                limit = parse_bytes(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"rule {name}: {raw!r} is not a number", hint="e.g. 0.9, 0.1 or 20MB") from exc
        if name == "lowest_efficiency":
            actual, bad = report.efficiency, report.efficiency < limit
            why = f"efficiency {actual:.4f} < {limit}" if bad else ""
        elif name == "highest_user_wasted_percent":
            actual, bad = report.wasted_percent, report.wasted_percent > limit
            why = f"wasted {actual:.2%} of user layers > {limit:.2%}" if bad else ""
        elif name == "highest_wasted_bytes":
            actual, bad = report.wasted_bytes, report.wasted_bytes > limit
            why = f"wasted {_human(actual)} > {_human(limit)}" if bad else ""
        else:
            actual, bad = report.hidden_bytes, report.hidden_bytes > limit
            why = f"hidden {_human(actual)} > {_human(limit)}" if bad else ""
        rows.append({"rule": name, "threshold": raw, "actual": round(actual, 6) if isinstance(actual, float)
                     else actual, "status": "FAIL" if bad else "pass", "why": why})
    return GateResult(report.image, rows)

"""The base-image hierarchy of an engine's images: which images share which base layers.

Image B is built on image A when A's RootFS diff ids are a prefix of B's. Each image's *parent* is
the local image with the longest such prefix, so the frame is a forest: a team sees at a glance what
an update of a base would rebuild (every image below it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._display import card, frame_html, human_size
from .engine import Engine

COLUMNS = ["image", "image_id", "tags", "parent", "parent_id", "depth", "layers", "own_layers", "shared_layers", "size",
           "own_size", "created", "dependents"]


@dataclass
class Hierarchy:
    """The hierarchy frame (``to_frame()``), with helpers to ask what a base update would rebuild."""

    rows: list[dict[str, Any]]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def dependents(self, image: str) -> list[str]:
        """Every image built (directly or not) on ``image`` (a tag or an id): what its update rebuilds."""
        node = self._find(image)
        out: list[str] = []
        todo = [node["image_id"]]
        while todo:
            cur = todo.pop()
            kids = [r for r in self.rows if r["parent_id"] == cur]
            out += [k["image"] for k in kids]
            todo += [k["image_id"] for k in kids]
        return out

    def _find(self, image: str) -> dict[str, Any]:
        for r in self.rows:
            if image == r["image"] or image in r["tags"] or r["image_id"].startswith(image) \
                    or r["image_id"] == f"sha256:{image}":
                return r
        from .errors import NotFound

        raise NotFound(f"no image {image!r} in the hierarchy", hint="list them with hierarchy(engine).to_frame()")

    def plot(self, ax: Any = None, **kw: Any):
        from . import plot

        return plot.image_hierarchy(self.to_frame(), ax=ax, **kw)

    def __repr__(self) -> str:
        roots = sum(1 for r in self.rows if r["parent"] is None)
        return f"<Hierarchy {len(self.rows)} images, {roots} roots>"

    def _repr_html_(self) -> str:
        df = self.to_frame()
        df["size"] = df["size"].map(human_size)
        df["own_size"] = df["own_size"].map(human_size)
        view = df[["image", "parent", "depth", "layers", "shared_layers", "own_layers", "size", "own_size", "dependents"]]
        return card("image hierarchy", {"images": len(df), "roots": int(df["parent"].isna().sum())}, frame_html(view))


def hierarchy(engine: Engine, *, dangling: bool = False) -> Hierarchy:
    """Read every local image (tagged ones; ``dangling=True`` adds the untagged) and link each to its base."""
    summaries = engine.call("list the images", engine.api.images, all=False)
    images = []
    for s in summaries:
        tags = [t for t in (s.get("RepoTags") or []) if t != "<none>:<none>"]
        if not tags and not dangling:
            continue
        attrs = engine.call(f"inspect image {s['Id'][:19]}", engine.api.inspect_image, s["Id"])
        images.append({"image_id": attrs["Id"], "tags": sorted(tags, key=_tag_order), "layers": attrs.get("RootFS", {}).get("Layers", []),
                       "size": int(attrs.get("Size") or 0), "created": attrs.get("Created", "")})
    return Hierarchy(link(images))


def _tag_order(tag: str) -> tuple[int, int, str]:
    """Local names first (``nbops/busybox:latest`` before ``10.0.0.1:5000/nbops/busybox:latest``)."""
    first = tag.split("/", 1)[0]
    remote = "/" in tag and ("." in first or ":" in first or first == "localhost")
    return (int(remote), len(tag), tag)


def link(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each image (``image_id, tags, layers, size, created``) its parent, depth and dependents.

    The parent is the image whose layers are the longest prefix of this one's; with equal layers
    (a child that only changed the config) the older image is the parent.
    """
    order = sorted(images, key=lambda i: (len(i["layers"]), i["created"], i["image_id"]))
    pos = {i["image_id"]: n for n, i in enumerate(order)}
    parent: dict[str, dict[str, Any] | None] = {}
    for img in order:
        best = None
        for cand in order:
            if cand is img or pos[cand["image_id"]] > pos[img["image_id"]]:
                continue
            n = len(cand["layers"])
            if n and img["layers"][:n] == cand["layers"] and (best is None or n > len(best["layers"])):
                best = cand
        parent[img["image_id"]] = best
    rows = []
    for img in order:
        p = parent[img["image_id"]]
        depth, cur = 0, p
        while cur is not None:
            depth += 1
            cur = parent[cur["image_id"]]
        shared = len(p["layers"]) if p else 0
        rows.append({
            "image": img["tags"][0] if img["tags"] else img["image_id"][7:19], "image_id": img["image_id"],
            "tags": ", ".join(img["tags"]), "parent": (p["tags"][0] if p and p["tags"] else p["image_id"][7:19]) if p else None,
            "parent_id": p["image_id"] if p else None, "depth": depth, "layers": len(img["layers"]),
            "own_layers": len(img["layers"]) - shared, "shared_layers": shared, "size": img["size"],
            "own_size": img["size"] - (p["size"] if p else 0), "created": img["created"], "dependents": 0,
        })
    by_id = {r["image_id"]: r for r in rows}
    for r in rows:
        cur = r["parent_id"]
        while cur is not None:
            by_id[cur]["dependents"] += 1
            cur = by_id[cur]["parent_id"]
    return rows

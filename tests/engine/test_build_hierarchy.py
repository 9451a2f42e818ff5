"""Base-image hierarchy of the lab engine's images: frame, dependents, plot."""

from __future__ import annotations

import uuid

import matplotlib
import pytest

from nbops.build import build
from nbops.hierarchy import hierarchy, link

matplotlib.use("Agg")
pytestmark = pytest.mark.engine


def test_link_offline_prefixes_and_config_only_children():
    imgs = [
        {"image_id": "sha256:c", "tags": ["app:1"], "layers": ["a", "b", "c"], "size": 30, "created": "3"},
        {"image_id": "sha256:a", "tags": ["base:1"], "layers": ["a"], "size": 10, "created": "1"},
        {"image_id": "sha256:b", "tags": ["mid:1"], "layers": ["a", "b"], "size": 20, "created": "2"},
        {"image_id": "sha256:d", "tags": ["mid:debug"], "layers": ["a", "b"], "size": 20, "created": "4"},
        {"image_id": "sha256:x", "tags": ["other:1"], "layers": ["x"], "size": 5, "created": "1"},
    ]
    rows = {r["image"]: r for r in link(imgs)}
    assert rows["base:1"]["parent"] is None and rows["base:1"]["dependents"] == 3
    assert rows["mid:1"]["parent"] == "base:1" and rows["mid:1"]["shared_layers"] == 1
    assert rows["app:1"]["parent"] == "mid:1" and rows["app:1"]["depth"] == 2 and rows["app:1"]["own_size"] == 10
    assert rows["mid:debug"]["parent"] == "mid:1" and rows["mid:debug"]["own_layers"] == 0
    assert rows["other:1"]["parent"] is None and rows["other:1"]["dependents"] == 0


def test_hierarchy_of_real_images_and_what_a_base_update_rebuilds(engine, history, tmp_path):
    team = f"nbt-h{uuid.uuid4().hex[:6]}"
    build("FROM nbops/busybox\nRUN echo py > /python\n", [f"{team}/python:3"], engine=engine, history=history,
          progress="none")
    build(f"FROM {team}/python:3\nRUN echo web > /web\n", [f"{team}/web:1"], engine=engine, history=history,
          progress="none")
    build(f"FROM {team}/python:3\nRUN echo worker > /w\n", [f"{team}/worker:1"], engine=engine, history=history,
          progress="none")
    build("FROM scratch\nCOPY --from=nbops/busybox /bin/busybox /bin/sh\n", [f"{team}/static:1"], engine=engine,
          history=history, progress="none")
    h = hierarchy(engine)
    df = h.to_frame().set_index("image")
    assert df.at[f"{team}/python:3", "parent"] == "nbops/busybox:latest"
    assert df.at[f"{team}/web:1", "parent"] == f"{team}/python:3"
    assert df.at[f"{team}/web:1", "shared_layers"] == df.at[f"{team}/python:3", "layers"]
    assert df.at[f"{team}/web:1", "depth"] == 2
    assert pd_isnull(df.at[f"{team}/static:1", "parent"])
    assert sorted(h.dependents(f"{team}/python:3")) == [f"{team}/web:1", f"{team}/worker:1"]
    assert f"{team}/web:1" in h.dependents("nbops/busybox:latest")
    assert df.at["nbops/busybox:latest", "dependents"] >= 3
    ax = h.plot()
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith(f"{team}/python:3") and "rebuilds 2" in t for t in texts)
    out = tmp_path / "hierarchy.png"
    ax.figure.savefig(out, dpi=80)
    assert out.stat().st_size > 5000
    assert "image hierarchy" in h._repr_html_()
    for t in ("web:1", "worker:1", "python:3", "static:1"):
        engine.client.images.remove(f"{team}/{t}", force=True)


def pd_isnull(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))

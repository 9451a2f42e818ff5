"""Capture real push/pull streams from a throwaway lab into the JSON fixtures of tests/unit/jsons/.

Usage: .venv/bin/python scripts/capture_push_streams.py tests/unit/jsons   (starts and removes its own lab)
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

home = Path(tempfile.mkdtemp(prefix="nbc5-", dir="/tmp"))
os.environ["NBOPS_HOME"] = str(home)
os.environ["NBOPS_HISTORY"] = str(home / "h.sqlite")

from nbops.engine import Engine  # noqa: E402  (NBOPS_HOME must be set first)
from nbops.lab import Lab  # noqa: E402


def record(gen) -> list[dict]:
    rows, t0 = [], time.monotonic()
    for chunk in gen:
        rows.append({"t": round(time.monotonic() - t0, 4), "chunk": chunk})
    return rows


def main(out: Path) -> None:
    lab = Lab(home / "lab")
    try:
        lab.up(swarm=False)
        eng = Engine.connect()
        reg = lab.state().registry
        dockerfile = ("FROM nbops/busybox:latest\nRUN head -c 3000000 /dev/urandom > /big.bin\n"
                      "RUN head -c 40000 /dev/urandom > /small.bin\nRUN echo capture > /payload.txt\n")
        eng.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="capture/app:1", forcerm=True)
        repo, other = f"{reg}/nbtest/app", f"{reg}/nbtest/other"
        eng.api.tag("capture/app:1", repo, "1")
        cold = record(eng.api.push(repo, tag="1", stream=True, decode=True))
        again = record(eng.api.push(repo, tag="1", stream=True, decode=True))
        eng.api.tag("capture/app:1", other, "1")
        mounted = record(eng.api.push(other, tag="1", stream=True, decode=True))
        for ref in (f"{repo}:1", f"{other}:1", "capture/app:1"):
            eng.api.remove_image(ref)
        pull = record(eng.api.pull(repo, tag="1", stream=True, decode=True))
        layers = eng.api.inspect_image(f"{repo}:1")["RootFS"]["Layers"]
        for name, rows, r in (("push_cold", cold, repo), ("push_again", again, repo),
                              ("push_mounted", mounted, other), ("pull_cold", pull, repo)):
            doc = {"registry": reg, "repo": r.split("/", 1)[1], "tag": "1", "layers": layers, "stream": rows}
            (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
        print("captured", len(cold), len(again), len(mounted), len(pull), "chunks")
    finally:
        lab.down()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

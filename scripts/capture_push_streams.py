"""Capture real push/pull streams from a lab into JSON fixtures."""
import io, json, os, sys, tempfile, time
from pathlib import Path
home = Path(tempfile.mkdtemp(prefix="nbc5-", dir="/tmp"))
os.environ["NBOPS_HOME"] = str(home)
os.environ["NBOPS_HISTORY"] = str(home / "h.sqlite")
from nbops.lab import Lab
from nbops.engine import Engine
out = Path(sys.argv[1])
lab = Lab(home / "lab")
try:
    lab.up(swarm=False)
    eng = Engine.connect()
    reg = lab.state().registry
    df = ("FROM nbops/busybox:latest\nRUN head -c 3000000 /dev/urandom > /big.bin\n"
          "RUN head -c 40000 /dev/urandom > /small.bin\nRUN echo capture > /payload.txt\n")
    eng.client.images.build(fileobj=io.BytesIO(df.encode()), tag="capture/app:1", forcerm=True)
    repo = f"{reg}/nbtest/app"
    eng.api.tag("capture/app:1", repo, "1")
    def rec(gen):
        rows = []
        t0 = time.monotonic()
        for c in gen:
            rows.append({"t": round(time.monotonic() - t0, 4), "chunk": c})
        return rows
    cold = rec(eng.api.push(repo, tag="1", stream=True, decode=True))
    again = rec(eng.api.push(repo, tag="1", stream=True, decode=True))
    eng.api.tag("capture/app:1", f"{reg}/nbtest/other", "1")
    mounted = rec(eng.api.push(f"{reg}/nbtest/other", tag="1", stream=True, decode=True))
    eng.api.remove_image(f"{repo}:1"); eng.api.remove_image(f"{reg}/nbtest/other:1"); eng.api.remove_image("capture/app:1")
    pull = rec(eng.api.pull(repo, tag="1", stream=True, decode=True))
    layers = eng.api.inspect_image(f"{repo}:1")["RootFS"]["Layers"]
    for name, rows in (("push_cold", cold), ("push_again", again), ("push_mounted", mounted), ("pull_cold", pull)):
        (out / f"{name}.json").write_text(json.dumps({"registry": reg, "repo": repo.split("/", 1)[1] if name != "push_mounted" else "nbtest/other",
                                                         "tag": "1", "layers": layers, "stream": rows}, indent=1))
    print("ok", len(cold), len(again), len(mounted), len(pull))
finally:
    lab.down()

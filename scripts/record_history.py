"""Record the history dataset shipped in notebooks/data/ from REAL runs of the local lab.

    sudo .venv/bin/python scripts/record_history.py

Starts a lab in a temporary NBOPS_HOME (never the user's), makes a demo app repository whose tags
grow and shrink its assets, and releases each tag with `nbops run notebooks/release.ipynb` (one tag
with a failing HEALTHCHECK, which rolls back). Then it runs notebooks/trends.ipynb on that history and
writes:

* notebooks/data/lab-history.sqlite — the history store of those runs (builds, steps, pushes,
  layers, deploys, rollout events, runs), what the notebooks analyse when no engine is reachable;
* notebooks/data/README.md — provenance: when, which engine, which runs;
* docs/runs/*.ipynb — the executed records rendered by the docs site.

The lab is removed at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "notebooks" / "data"
DOCS_RUNS = ROOT / "docs" / "runs"

# tag -> (files of the app at that tag: name -> size in bytes or text, break the health check?)
RELEASES: list[tuple[str, dict[str, int | str], bool]] = [
    ("v0.1.0", {"index.html": "<h1>demo app v0.1.0</h1>\n"}, False),
    ("v0.2.0", {"index.html": "<h1>demo app v0.2.0</h1>\n", "assets/app.js": 300_000}, False),
    ("v0.3.0", {"index.html": "<h1>demo app v0.3.0</h1>\n", "assets/app.js": 800_000, "assets/logo.png": 200_000}, False),
    ("v0.4.0", {"index.html": "<h1>demo app v0.4.0</h1>\n", "assets/app.js": 900_000, "assets/logo.png": 200_000}, True),
    ("v0.5.0", {"index.html": "<h1>demo app v0.5.0</h1>\n", "assets/app.js": 250_000, "assets/logo.png": 200_000}, False),
]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(repo: Path) -> None:
    rng = random.Random(8)
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "record@nbops.invalid")
    git(repo, "config", "user.name", "nbops recorder")
    for tag, files, _broken in RELEASES:
        for old in repo.rglob("*"):
            if old.is_file() and ".git" not in old.parts:
                old.unlink()
        for name, content in files.items():
            path = repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content)
            else:  # incompressible bytes, like a real bundle
                path.write_bytes(rng.randbytes(content))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"release {tag}")
        git(repo, "tag", tag)


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="nbrec-", dir="/tmp"))
    os.environ.update({"NBOPS_HOME": str(home), "NBOPS_HISTORY": str(home / "history.sqlite"),
                       "NBOPS_PROGRESS": "text"})
    os.environ.pop("DOCKER_HOST", None)
    from nbops import runbook
    from nbops.engine import Engine
    from nbops.lab import Lab

    lab = Lab(home / "lab")
    print(f"lab {lab.prefix} in {home}", flush=True)
    results = []
    try:
        lab.up()
        engine = Engine.connect()
        version = engine.version.get("Version")
        repo = home / "demo-src"
        make_repo(repo)
        for tag, _files, broken in RELEASES:
            res = runbook.run(ROOT / "notebooks" / "release.ipynb",
                              {"tag": tag, "source": str(repo), "app": "web", "replicas": 2,
                               "break_health": broken, "deploy_timeout": 20.0 if broken else 60.0},
                              out=home / "runs")
            results.append((tag, broken, res))
            if res.ok == broken:
                print(f"unexpected outcome for {tag}: {res.one_line()}", file=sys.stderr)
                return 1
            if broken:  # resuming a rolled-back release re-runs only the state cells and fails the same way
                again = runbook.run(None, {}, resume=res.run_id, out=home / "runs")
                if again.ok or again.error != res.error:
                    print(f"unexpected resume of {tag}: {again.one_line()}", file=sys.stderr)
                    return 1
        trends = runbook.run(ROOT / "notebooks" / "trends.ipynb", {"name": "app"}, out=home / "runs")
        if not trends.ok:
            print(trends.one_line(), file=sys.stderr)
            return 1
        from nbops.deploy.swarm import remove

        remove("web", engine=engine)

        DOCS_RUNS.mkdir(parents=True, exist_ok=True)
        healthy = next(r for t, b, r in reversed(results) if not b and t != "v0.5.0")
        rollback = next(r for _t, b, r in results if b)
        copies = {healthy.output: "release-healthy.ipynb", rollback.output: "release-rollback.ipynb",
                  trends.output: "trends.ipynb"}
        for src, name in copies.items():
            dest = DOCS_RUNS / name
            if dest.exists():
                dest.chmod(0o644)
            shutil.copyfile(src, dest)
            dest.chmod(0o644)

        DATA.mkdir(parents=True, exist_ok=True)
        target = DATA / "lab-history.sqlite"
        target.unlink(missing_ok=True)
        src = sqlite3.connect(home / "history.sqlite")
        src.execute("VACUUM INTO ?", (str(target),))
        src.close()
        out = sqlite3.connect(target)
        # the records live in a temp dir that is gone: keep their names, point the copied ones at docs/
        for path, name in copies.items():
            out.execute("UPDATE runs SET output=? WHERE output=?", (f"docs/runs/{name}", path))
        out.execute("UPDATE runs SET notebook='notebooks/' || replace(notebook, rtrim(notebook, replace(notebook, '/', '')), '')")
        out.execute("UPDATE runs SET output=replace(output, rtrim(output, replace(output, '/', '')), '') "
                    "WHERE output NOT LIKE 'docs/%'")
        out.commit()
        counts = {t: out.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("runs", "builds", "build_steps", "pushes", "push_layers", "deploys", "rollout_events")}
        out.execute("VACUUM")
        out.close()
        write_readme(version, results, counts)
        print(f"recorded {counts} into {target}")
        return 0
    finally:
        lab.down()
        shutil.rmtree(home, ignore_errors=True)


def write_readme(version: str | None, results, counts: dict[str, int]) -> None:
    rows = "\n".join(f"| {tag} | {'yes' if broken else 'no'} | `{res.run_id}` | {res.status} | "
                     f"{(res.error or 'released, healthy').replace('|', '/')} |" for tag, broken, res in results)
    (DATA / "README.md").write_text(f"""# Recorded lab history

`lab-history.sqlite` is an nbops history store (the same schema as `$NBOPS_HISTORY`) **recorded from
real runs** on the local lab — dockerd {version}, the lab registry and a one-node swarm — by

    python scripts/record_history.py

on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Nothing in it is made up or edited, except that
the paths of the executed notebooks (in a temporary directory that no longer exists) are shortened to
their file names, and the three records copied to `docs/runs/` point there.

The script released a demo app (a git repository whose tags grow and shrink its assets) with
`nbops run notebooks/release.ipynb`, tag by tag (the rolled-back one was then resumed with
`nbops run --resume`, which re-ran only its `parameters`/`setup`/`state` cells and failed the same way):

| tag | broken HEALTHCHECK | run | status | outcome |
|---|---|---|---|---|
{rows}

then ran `notebooks/trends.ipynb` on that history. Rows: {', '.join(f'{k} {v}' for k, v in counts.items())}.

The notebooks read it when no Docker engine is reachable (Binder) — `trends.ipynb` and the summary of
`release.ipynb` — and say so in one line.
""")


if __name__ == "__main__":
    sys.exit(main())

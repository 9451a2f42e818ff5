"""nbops run: parameters, the record, the run log, failure + --resume, tag selection — real kernels.

Each test writes a small notebook into a temp dir and runs it through `nbops run` (the CLI entry
point, in a subprocess where the exit status matters) with the venv's python3 kernel.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbops import runbook
from nbops.cli import main, resolve_value


def write_nb(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    nb = new_notebook(cells=[new_markdown_cell("# a runbook written by a test")])
    for source, tags in cells:
        cell = new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def trail(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def mark(name: str) -> str:
    return f"open(TRAIL, 'a').write({name!r} + ' ')"


def test_resolve_value_follows_papermill():
    assert resolve_value("3") == 3 and resolve_value("2.5") == 2.5
    assert resolve_value("True") is True and resolve_value("None") is None
    assert resolve_value("v1.2.3") == "v1.2.3"


def test_params_produce_record_and_run_log(tmp_path, history):
    nb = write_nb(tmp_path / "book.ipynb", [
        ("TRAIL = ''\ncount = 1\nname = 'default'", ["parameters"]),
        ("import os\nrun_id = os.environ['NBOPS_RUN_ID']\nprogress = os.environ['NBOPS_PROGRESS']", []),
        ("result = f'{name}:{count * 2}'\nprint(result, progress)", []),
    ])
    lines: list[str] = []
    res = runbook.run(nb, {"count": 21, "name": "hello"}, out=tmp_path / "runs", history=history, echo=lines.append)
    assert res.ok, res.one_line()
    record = Path(res.output)
    assert record.parent == tmp_path / "runs" and record.exists()
    assert not record.stat().st_mode & stat.S_IWUSR, "the record is read-only"
    executed = nbformat.read(record, as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "hello:42 text" in outputs  # parameters injected, text progress set in the kernel
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "count = 21" in injected[0].source
    assert any("ok" in line and "result = f'{name}" in line for line in lines), lines  # per-cell text lines
    row = runbook.get_run(res.run_id, history=history)
    assert row["status"] == "ok" and json.loads(row["params"]) == {"count": 21, "name": "hello"}
    assert row["output"] == str(record) and row["user"] and row["host"] and row["finished"] >= row["started"]
    log = runbook.runs(history=history)
    df = log.to_frame()
    assert list(df["id"]) == [res.run_id] and df.loc[0, "status"] == "ok"
    assert abs(df.loc[0, "duration_s"] - res.duration_s) < 0.2
    assert record.name in log._repr_html_()


@pytest.mark.engine
def test_run_records_nbops_calls_and_resumes_from_failed_cell(tmp_path, history, lab):
    """A build runs, a later cell fails; --resume skips the build, restores its state, finishes."""
    flag = tmp_path / "fixed"
    trail_file = tmp_path / "trail"
    nb = write_nb(tmp_path / "release.ipynb", [
        (f"TRAIL = {str(trail_file)!r}\nFLAG = {str(flag)!r}\ntag = 'v0'", ["parameters"]),
        ("%load_ext nbops\nfrom pathlib import Path\nfrom nbops import runbook\n" + mark("setup"), ["setup"]),
        ("%%dockerfile rb\nFROM nbops/busybox\nRUN echo {tag} > /version", []),
        ("build = %build rb -t rb-test:{tag}\n" + mark("build"), []),
        ("image_id = runbook.last('builds', name='rb')['image_id']\n" + mark("state"), ["state"]),
        (mark("before") + "\nassert Path(FLAG).exists(), 'the flag file is missing'\n" + mark("flagged"), []),
        ("print('image', image_id)\n" + mark("after"), []),
    ])
    first = runbook.run(nb, {"tag": "v7"}, out=tmp_path, history=history, echo=None)
    assert not first.ok
    assert first.failed_cell is not None and first.failed_cell.index == 6
    assert "AssertionError: the flag file is missing" in first.error
    assert trail(trail_file) == ["setup", "build", "state", "before"]
    builds = history.frame("SELECT run_id, tags, ok FROM builds")
    assert list(builds["run_id"]) == [first.run_id] and json.loads(builds["tags"][0]) == ["rb-test:v7"]
    log = runbook.runs(history=history).to_frame()
    assert "built rb-test:v7" in log.loc[0, "summary"] and log.loc[0, "status"] == "failed"

    flag.write_text("fixed")
    trail_file.unlink()
    lines: list[str] = []
    second = runbook.run(None, {}, resume=first.run_id, out=tmp_path, history=history, echo=lines.append)
    assert second.ok, second.one_line()
    assert trail(trail_file) == ["setup", "state", "before", "flagged", "after"]  # the build was not re-run
    assert [r.index for r in second.skipped] == [3, 4]  # %%dockerfile and %build
    assert any("skip cell 5 [" in line and "%build" in line for line in lines), lines
    assert history.execute("SELECT count(*) FROM builds")[0][0] == 1
    executed = nbformat.read(second.output, as_version=4)
    out = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"image {builds_image(history)}" in out  # the state cell restored the recorded image id
    row = runbook.get_run(second.run_id, history=history)
    assert row["resumed_from"] == first.run_id and json.loads(row["params"])["tag"] == "v7"
    with pytest.raises(Exception, match="finished ok"):
        runbook.run(None, {}, resume=second.run_id, history=history, echo=None)


def builds_image(history) -> str:
    return history.execute("SELECT image_id FROM builds")[0][0]


def test_tag_selection(tmp_path, history):
    trail_file = tmp_path / "trail"
    nb = write_nb(tmp_path / "tags.ipynb", [
        (f"TRAIL = {str(trail_file)!r}", ["parameters"]),
        (mark("setup"), ["setup"]),
        (mark("deploy"), []),
        (mark("slow"), ["slow"]),
        (mark("verify"), ["verify"]),
        (mark("slowverify"), ["verify", "slow"]),
    ])
    only = runbook.run(nb, {}, tags=["verify"], out=tmp_path, history=history, echo=None)
    assert only.ok and trail(trail_file) == ["setup", "verify", "slowverify"]
    assert [r.index for r in only.skipped] == [3, 4]
    executed = nbformat.read(only.output, as_version=4)
    assert executed.cells[3].cell_type == "raw" and "not tagged verify" in executed.cells[3].metadata["nbops"]["skipped"]
    trail_file.unlink()
    runbook.run(nb, {}, skip_tags=["slow"], out=tmp_path, history=history, echo=None)
    assert trail(trail_file) == ["setup", "deploy", "verify"]
    trail_file.unlink()
    runbook.run(nb, {}, tags=["verify"], skip_tags=["slow"], out=tmp_path, history=history, echo=None)
    assert trail(trail_file) == ["setup", "verify"]


def test_cli_exit_status_and_one_line_error(tmp_path):
    nb = write_nb(tmp_path / "fail.ipynb", [
        ("x = 1", ["parameters"]),
        ("print('fine')", []),
        ("raise ValueError(f'bad x={x}')", []),
    ])
    env = {**os.environ, "NBOPS_HISTORY": str(tmp_path / "h.sqlite"), "NBOPS_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "nbops.cli", "run", str(nb), "-p", "x", "5", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("nbops: error")]
    assert len(err) == 1, proc.stderr
    assert "cell 4 [" in err[0] and "raise ValueError" in err[0] and "ValueError: bad x=5" in err[0]
    assert "--resume" in err[0]
    assert "ok" in proc.stdout and "print('fine')" in proc.stdout  # text progress, one line per cell
    runs = subprocess.run([sys.executable, "-m", "nbops.cli", "runs"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert runs.returncode == 0 and "fail.ipynb" in runs.stdout and "failed" in runs.stdout


def test_bad_input_is_one_clear_error(tmp_path, history, capsys):
    assert main(["run", str(tmp_path / "missing.ipynb")]) == 1
    assert "no notebook at" in capsys.readouterr().err
    assert main(["run", "--resume", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_runs_magic(ipshell, tmp_path, history, monkeypatch):
    monkeypatch.setenv("NBOPS_HISTORY", str(history.path))
    nb = write_nb(tmp_path / "m.ipynb", [("y = 2", ["parameters"])])
    res = runbook.run(nb, {"y": 3}, out=tmp_path, history=history, echo=None)
    log = ipshell.run_line_magic("nbops", "runs")
    assert list(log.to_frame()["id"]) == [res.run_id]
    one = ipshell.run_line_magic("nbops", f"runs {res.run_id}")
    assert one["status"] == "ok"

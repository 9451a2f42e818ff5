"""The per-layer progress display, replayed against push and pull streams recorded from the real lab.

The fixtures in jsons/ were captured by scripts/capture_push_streams.py: each row is a chunk of
``api.push(..., stream=True, decode=True)`` (or ``api.pull``) with the time it arrived, so the replay
gives the display the same clock the real push had.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbops.distribute import follow_pull, follow_push
from nbops.progress import LayerProgress

JSONS = Path(__file__).parent / "jsons"


def recorded(name: str) -> dict:
    return json.loads((JSONS / f"{name}.json").read_text())


def replay(name: str, requested: str = "text", *, extra: list[dict] | None = None, stop_after: int | None = None):
    """Feed a recorded stream through follow_push/follow_pull into a LayerProgress; return both ends."""
    rec = recorded(name)
    rows = rec["stream"][:stop_after] + [{"t": rec["stream"][stop_after - 1]["t"], "chunk": c} for c in extra or []] \
        if stop_after else rec["stream"]
    now = [0.0]

    def stream():
        for row in rows:
            now[0] = row["t"]
            yield row["chunk"]

    out = io.StringIO()
    display = LayerProgress(f"{name} {rec['repo']}", requested=requested, out=out, clock=lambda: now[0])
    if name.startswith("pull"):
        layers, digest, error = follow_pull(stream(), display)
    else:
        layers, digest, error = follow_push(stream(), display, tag=rec["tag"])
    display.close(failed=bool(error or not digest))
    return rec, display, out.getvalue().splitlines(), layers, digest, error


def final_lines(lines: list[str]) -> dict[str, list[str]]:
    finals: dict[str, list[str]] = {}
    for line in lines[1:]:
        layer, _, rest = line.partition(" ")
        if rest.split(" ")[0] in ("pushed", "pulled", "already", "mounted", "failed"):
            finals.setdefault(layer, []).append(rest)
    return finals


def test_cold_push_prints_each_layer_state_change_and_one_final_line():
    rec, display, lines, layers, digest, error = replay("push_cold")
    assert error is None and digest == rec["stream"][-1]["chunk"]["aux"]["Digest"]
    assert lines == [
        "push_cold nbtest/app",
        "3ac750e84683 pushing 3.0 MB",
        "976cb1ea0918 pushing 512 B",
        "619e52187b18 pushing 40.0 kB",
        "ade500f0a5b6 mounted from nbops/busybox",
        "f9fcb5d5e35c mounted from nbops/busybox",
        "976cb1ea0918 pushed 2.0 kB in 190 ms",
        "619e52187b18 pushed 42.0 kB in 252 ms",
        "3ac750e84683 pushed 3.0 MB in 896 ms",
    ]
    # one final line per layer of the image, and the same status as the result rows
    finals = final_lines(lines)
    assert set(finals) == {diff_id[len("sha256:"):][:12] for diff_id in rec["layers"]}
    assert all(len(v) == 1 for v in finals.values())
    by_layer = {lp.layer: lp for lp in layers}
    for layer, (text,) in finals.items():
        assert text.startswith(by_layer[layer].status)
    # the duration runs from the first bytes to "Pushed", on the stream's own clock
    assert by_layer["3ac750e84683"].duration_s == pytest.approx(0.9675 - 0.0711)
    assert by_layer["3ac750e84683"].bytes == 3001856


@pytest.mark.parametrize("name, word", [("push_again", "already exists"), ("push_mounted", "mounted from nbtest/app")])
def test_repush_and_cross_repo_mount_print_one_line_per_layer(name, word):
    rec, _, lines, layers, _, error = replay(name)
    assert error is None
    assert len(lines) == 1 + len(rec["layers"])
    assert all(line.endswith(f" {word}") for line in lines[1:])
    assert {line.split(" ")[0] for line in lines[1:]} == {lp.layer for lp in layers}
    assert all(lp.bytes is None for lp in layers)


def test_pull_prints_downloading_extracting_and_pulled():
    rec, _, lines, layers, digest, error = replay("pull_cold")
    assert error is None and digest.startswith("sha256:")
    finals = final_lines(lines)
    assert len(finals) == len(rec["layers"]) == len(layers)
    assert finals["b333463bcf08"] == ["already exists"]
    assert finals["8f26cca11fac"] == ["pulled 3.0 MB in 411 ms"]
    assert "8f26cca11fac downloading 3.0 MB" in lines and "8f26cca11fac extracting 3.0 MB" in lines
    assert lines.index("8f26cca11fac downloading 3.0 MB") < lines.index("8f26cca11fac extracting 3.0 MB")


def test_an_error_in_the_stream_marks_unfinished_layers_failed():
    # the recorded cold push, cut after the first "Pushed", then the engine's error chunk
    err = {"errorDetail": {"message": "blob upload unknown"}, "error": "blob upload unknown"}
    _, _, lines, layers, digest, error = replay("push_cold", extra=[err], stop_after=17)
    assert error == "blob upload unknown" and digest is None
    finals = final_lines(lines)
    assert finals["976cb1ea0918"] == ["pushed 2.0 kB in 190 ms"]
    assert finals["3ac750e84683"] == ["failed"] and finals["619e52187b18"] == ["failed"]
    assert all(len(v) == 1 for v in finals.values())


def test_none_mode_writes_nothing(capsys):
    _, display, lines, layers, _, _ = replay("push_cold", requested="none")
    assert lines == [] and display.lines == [] and capsys.readouterr().out == ""
    assert len(layers) == 5


def test_widget_mode_builds_one_row_per_layer_without_a_kernel(capsys):
    pytest.importorskip("ipywidgets")
    rec, display, _, layers, _, _ = replay("push_cold", requested="widget")
    assert display.mode == "widget" and display.lines == []
    rows = display._box.children[1:]
    assert len(rows) == len(rec["layers"])
    by_name = {row.children[0].value: row.children for row in rows}
    assert set(by_name) == {lp.layer for lp in layers}
    _, bar, label = by_name["3ac750e84683"]
    assert bar.value == bar.max == 3001856 and bar.bar_style == "success"
    assert label.value == "pushed 3.0 MB in 896 ms"
    assert by_name["ade500f0a5b6"][2].value == "mounted from nbops/busybox"


def test_widget_redraws_on_whole_percents_only():
    pytest.importorskip("ipywidgets")
    display = LayerProgress("t", requested="widget", out=io.StringIO())
    display.state("a" * 12, "pushing", current=0, total=10_000)
    bar, label = display.rows["a" * 12].widgets
    values = []
    bar.observe(lambda ch: values.append(ch["new"]), names="value")
    for cur in range(0, 10_001, 10):  # 1001 chunks
        display.state("a" * 12, "pushing", current=cur)
    assert len(values) == 100 and values[-1] == 10_000
    assert label.value == "pushing 10.0 kB / 10.0 kB"


def test_widget_path_is_never_imported_by_load_ext_or_the_progress_module():
    code = ("from IPython.core.interactiveshell import InteractiveShell; import sys;"
            "InteractiveShell.instance().run_line_magic('load_ext', 'nbops');"
            "import nbops.progress, nbops.distribute;"
            "print(sorted(m for m in ('ipywidgets', 'tqdm', 'docker') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_repeated_final_chunk_is_reported_once_and_keeps_its_duration():
    out = io.StringIO()
    now = [1.0]
    display = LayerProgress("t", requested="text", out=out, clock=lambda: now[0])
    display.state("b" * 12, "pushing", current=10, total=1000)
    now[0] = 1.5
    assert display.finish("b" * 12, "pushed", nbytes=1000) == pytest.approx(0.5)
    assert display.finish("b" * 12, "pushed", nbytes=1000) == pytest.approx(0.5)
    assert out.getvalue().splitlines() == ["t", "b" * 12 + " pushing 1.0 kB", "b" * 12 + " pushed 1.0 kB in 500 ms"]

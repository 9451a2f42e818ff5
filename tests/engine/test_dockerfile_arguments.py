"""Instruction arguments: what the engine's Dockerfile parser refuses, nbops refuses first (same line, the
engine's words), and what the engine accepts, nbops lets through. Each case is sent to the real engine."""

from __future__ import annotations

import io
import re

import pytest

from nbops.dockerfile import DockerfileError, check_syntax

pytestmark = pytest.mark.engine

REFUSED = ["ENV", "ENV A", "ARG", "LABEL", "LABEL a", "COPY", "COPY --chown=1 a", 'COPY ["a"]', "ADD x",
           "EXPOSE", "VOLUME", "SHELL", "ONBUILD", "HEALTHCHECK", "WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER",
           "FROM", "FROM nbops/busybox b", "FROM nbops/busybox b c"]
ACCEPTED = ["ENV A b", "ENV A=1 B=2", "LABEL a=b", "WORKDIR /a b", "USER a b", "FROM nbops/busybox AS two",
            "ARG X", "EXPOSE 80", "CMD", "STOPSIGNAL SIGTERM"]


def _engine_build(engine, text: str) -> str | None:
    """The engine's (legacy builder's) parse error for ``text``, or None when it builds."""
    from docker.errors import APIError, BuildError

    try:
        engine.client.images.build(fileobj=io.BytesIO(text.encode()), rm=True, forcerm=True)
    except (APIError, BuildError) as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("instruction", REFUSED)
def test_refused_by_both(engine, instruction):
    text = f"FROM nbops/busybox\n{instruction}\n"
    said = _engine_build(engine, text)
    assert said is not None and ("parse error line 2" in said or "failed to parse Dockerfile" in said), said
    with pytest.raises(DockerfileError) as err:
        check_syntax(text)
    assert err.value.line == 2
    engine_says = re.search(r'(?:line 2|Dockerfile): ([^.:,"]+)', said).group(1)  # e.g. "ENV requires at ..."
    assert err.value.message.startswith(f"line 2: {engine_says}"), (err.value.message, said)


@pytest.mark.parametrize("instruction", ACCEPTED)
def test_accepted_by_both(engine, instruction):
    text = f"FROM nbops/busybox\n{instruction}\n"
    check_syntax(text)  # raises nothing
    assert _engine_build(engine, text) is None

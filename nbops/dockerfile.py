"""Dockerfile cells: named, stored per session, with ``{var}`` interpolation from the notebook.

``{name}`` is replaced by the value of the notebook variable ``name`` when it exists (so papermill
parameters flow in); ``${VAR}`` and ``$VAR`` are Docker's own and never touched; ``{{``/``}}`` give
literal braces.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._display import esc
from .errors import DockerfileError

_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{var}`` by ``namespace[var]`` for known names; leave everything else as written."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        return str(namespace[key]) if key in namespace else m.group(0)

    out = _PLACEHOLDER.sub(sub, text)
    return out.replace("{{", "{").replace("}}", "}")


@dataclass
class DockerfileCell:
    """A Dockerfile written in a ``%%dockerfile NAME`` cell."""

    name: str
    text: str
    context: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def parser(self):
        from dockerfile_parse import DockerfileParser

        parser = DockerfileParser(fileobj=io.BytesIO(self.text.encode()))
        return parser

    @property
    def structure(self) -> list[dict[str, Any]]:
        try:
            return self.parser().structure
        except Exception as exc:  # dockerfile-parse raises assorted errors on broken input
            raise DockerfileError(f"cannot parse Dockerfile {self.name!r}: {exc}", hint="fix the cell") from exc

    def check(self) -> None:
        """Fail fast on what cannot build: no instructions, no FROM first, unknown instructions."""
        instrs = self.structure
        if not instrs:
            raise DockerfileError(f"Dockerfile {self.name!r} has no instructions", hint="add at least a FROM line")
        first = next((i for i in instrs if i["instruction"] not in ("ARG", "COMMENT")), None)
        if first is None or first["instruction"] != "FROM":
            line = (first or instrs[0])["startline"] + 1
            raise DockerfileError(f"line {line}: a Dockerfile must start with FROM (after ARGs)",
                                  hint="add e.g. FROM nbops/busybox", line=line)
        for i in instrs:
            if i["instruction"] not in KNOWN_INSTRUCTIONS:
                line = i["startline"] + 1
                raise DockerfileError(f"line {line}: unknown instruction {i['instruction']}",
                                      hint=f"use one of {', '.join(sorted(KNOWN_INSTRUCTIONS - {'COMMENT'}))}", line=line)

    def __repr__(self) -> str:
        n = sum(1 for i in self.structure if i["instruction"] != "COMMENT")
        return f"<Dockerfile {self.name}: {n} instructions>"

    def _repr_html_(self) -> str:
        return f"<div><b>Dockerfile {esc(self.name)}</b> stored — build it with <code>%build {esc(self.name)} -t TAG</code></div>"


KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "COMMENT",
}

"""Dockerfile cells: named, stored per session, with ``{var}`` interpolation from the notebook,
a structure (stages, base images, ARGs per stage) and a lint (hadolint + nbops' own rules).

``{name}`` is replaced by the value of the notebook variable ``name`` when it exists (so papermill
parameters flow in); ``${VAR}`` and ``$VAR`` are Docker's own and never touched; ``{{``/``}}`` give
literal braces.

Heredocs (``RUN <<EOF``) confuse both hadolint (a spurious DL1000 syntax error) and dockerfile-parse
(the body is read as instructions), so their bodies are masked as comments before either sees the
text, keeping every line number; nbops reports the heredoc itself (it needs the Dockerfile 1.4
frontend, which the engine 20.10's built-in BuildKit does not have).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._display import card, esc
from .errors import DockerfileError

_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{var}`` by ``namespace[var]`` for known names; leave everything else as written."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        return str(namespace[key]) if key in namespace else m.group(0)

    out = _PLACEHOLDER.sub(sub, text)
    return out.replace("{{", "{").replace("}}", "}")


KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "COMMENT",
}

# -- heredocs -------------------------------------------------------------------------------------
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")


@dataclass
class Heredoc:
    line: int  # 1-based line of the instruction
    end_line: int  # 1-based line of the terminator (or the last line when unterminated)
    instruction: str
    delimiter: str
    terminated: bool


def mask_heredocs(text: str) -> tuple[str, list[Heredoc]]:
    """The text with heredoc bodies and terminators turned into comments (same line count)."""
    lines = text.split("\n")
    docs: list[Heredoc] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        word = stripped.split(None, 1)[0].upper() if stripped else ""
        if word in ("RUN", "COPY", "ADD") and "<<" in stripped:
            delims = [m.group(3) for m in _HEREDOC.finditer(stripped)]
            j = i + 1
            for delim in delims:
                start = j
                while j < len(lines) and lines[j].strip() != delim:
                    j += 1
                terminated = j < len(lines)
                for k in range(start, min(j + 1, len(lines))):
                    lines[k] = "# " + lines[k]
                docs.append(Heredoc(i + 1, min(j, len(lines) - 1) + 1, word, delim, terminated))
                j += 1
            i = j
        else:
            i += 1
    return "\n".join(lines), docs


# -- structure ------------------------------------------------------------------------------------
@dataclass
class Stage:
    index: int
    name: str | None
    base: str  # as written
    base_resolved: str  # with ARG defaults (and build args) substituted
    line: int
    args: dict[str, str | None] = field(default_factory=dict)
    from_stage: bool = False  # FROM another stage of this Dockerfile


@dataclass
class Structure:
    """Stages (each with its base image and its own ARGs) and the global ARGs before the first FROM."""

    stages: list[Stage]
    global_args: dict[str, str | None]
    instructions: list[dict[str, Any]]
    heredocs: list[Heredoc]

    @property
    def base_images(self) -> list[str]:
        return [s.base_resolved for s in self.stages if not s.from_stage]

    @property
    def is_multistage(self) -> bool:
        return len(self.stages) > 1

    def stage(self, target: str | None = None) -> Stage | None:
        if target is None:
            return self.stages[-1] if self.stages else None
        return next((s for s in self.stages if s.name == target), None)

    def to_frame(self):
        import pandas as pd

        rows = [{"stage": s.index, "name": s.name, "base": s.base_resolved, "line": s.line,
                 "args": ", ".join(s.args), "from_stage": s.from_stage} for s in self.stages]
        return pd.DataFrame(rows, columns=["stage", "name", "base", "line", "args", "from_stage"])


def _split_arg(value: str) -> tuple[str, str | None]:
    name, sep, default = value.strip().partition("=")
    return name.strip(), (default.strip().strip("\"'") if sep else None)


def _subst(text: str, values: Mapping[str, str | None]) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1) or m.group(2)
        val = values.get(key)
        return val if val is not None else m.group(0)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def parse(text: str, buildargs: Mapping[str, str] | None = None) -> Structure:
    """Parse with dockerfile-parse (heredoc bodies masked): instructions, stages, ARGs per stage."""
    from dockerfile_parse import DockerfileParser

    masked, docs = mask_heredocs(text)
    try:
        instrs = DockerfileParser(fileobj=io.BytesIO(masked.encode())).structure
    except Exception as exc:  # dockerfile-parse raises assorted errors on broken input
        raise DockerfileError(f"cannot parse the Dockerfile: {exc}", hint="fix the cell") from exc
    stages: list[Stage] = []
    global_args: dict[str, str | None] = {}
    for ins in instrs:
        kind = ins["instruction"]
        if kind == "ARG":
            for part in ins["value"].split():
                name, default = _split_arg(part)
                (stages[-1].args if stages else global_args)[name] = default
        elif kind == "FROM":
            words = ins["value"].split()
            words = [w for w in words if not w.startswith("--platform")]
            base = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            values = {**global_args, **{k: v for k, v in (buildargs or {}).items() if k in global_args}}
            resolved = _subst(base, values)
            from_stage = any(s.name == resolved for s in stages)
            stages.append(Stage(len(stages), name, base, resolved, ins["startline"] + 1, {}, from_stage))
    return Structure(stages, global_args, instrs, docs)


# -- lint -----------------------------------------------------------------------------------------
@dataclass
class Finding:
    line: int
    rule: str
    level: str  # error | warning | info | style
    message: str
    source: str = "nbops"


LEVELS = ("error", "warning", "info", "style")
# DL1000 is hadolint's syntax error; DL3006/DL3007/DL3064 are replaced by nbops' own, more precise rules
_REPLACED = {"DL3006": "NB006", "DL3007": "NB006", "DL3064": "NB002"}
_SECRET_NAME = re.compile(r"TOKEN|PASSW(?:OR)?D|SECRET|(?:^|_)KEY(?:$|_)|APIKEY|CREDENTIAL|PRIVATE", re.IGNORECASE)
_SECRET_FILE = re.compile(r"(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)|\.npmrc|\.pypirc|\.netrc|\.env|credentials|"
                          r"[^/]*(?:secret|token|password|passwd)[^/]*|[^/]*\.(?:pem|key|p12|pfx))$", re.IGNORECASE)


@dataclass
class Lint:
    """Lint findings for one Dockerfile (``to_frame()``: line, rule, level, message)."""

    findings: list[Finding]
    hadolint: str | None  # the hadolint version used, None when it is not installed

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def syntax_errors(self) -> list[Finding]:
        """Syntax errors by line; nbops' own message (it names the instruction) before hadolint's."""
        return sorted((f for f in self.findings if f.rule in SYNTAX_RULES), key=lambda f: (f.line, f.rule != "NB000"))

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(f) for f in self.findings],
                            columns=["line", "rule", "level", "message", "source"])

    def __len__(self) -> int:
        return len(self.findings)

    def __repr__(self) -> str:
        counts = {lv: sum(1 for f in self.findings if f.level == lv) for lv in LEVELS}
        return "<Lint " + ", ".join(f"{n} {lv}" for lv, n in counts.items() if n) + ">" if self.findings else "<Lint clean>"

    def html(self) -> str:
        if not self.findings:
            return "<div style='color:#31a354'>lint: no findings</div>"
        colors = {"error": "#de2d26", "warning": "#e6550d", "info": "#3182bd", "style": "#756bb1"}
        rows = "".join(
            f"<tr><td>{f.line}</td><td style='color:{colors.get(f.level, '#000')}'>{esc(f.level)}</td>"
            f"<td><code>{esc(f.rule)}</code></td><td style='text-align:left'>{esc(f.message)}</td></tr>"
            for f in self.findings)
        return ("<table class='nbops-table' border=0><thead><tr><th>line</th><th>level</th><th>rule</th>"
                f"<th>message</th></tr></thead><tbody>{rows}</tbody></table>")

    def _repr_html_(self) -> str:
        return card("lint", {"findings": len(self.findings), "errors": len(self.errors)}, self.html())


SYNTAX_RULES = {"DL1000", "NB000"}


def hadolint_path() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.is_file() else shutil.which("hadolint")


def run_hadolint(text: str, *, timeout: float = 20) -> tuple[list[Finding], str | None]:
    """hadolint's findings on ``text`` (heredoc bodies already masked by the caller)."""
    path = hadolint_path()
    if path is None:
        return [], None
    try:
        proc = subprocess.run([path, "--no-fail", "-f", "json", "-"], input=text, capture_output=True, text=True,
                              timeout=timeout)
        items = json.loads(proc.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return [Finding(0, "NB900", "info", f"hadolint could not run: {exc}", "nbops")], None
    out = [Finding(int(i.get("line") or 0), str(i.get("code")), str(i.get("level")),
                   " ".join(str(i.get("message")).split()), "hadolint") for i in items]
    return out, path


def lint(text: str, *, hadolint: bool = True, healthcheck: bool = True) -> Lint:
    """hadolint (when installed) plus nbops' own rules; findings sorted by line."""
    masked, docs = mask_heredocs(text)
    own = own_rules(text, healthcheck=healthcheck)
    found, used = run_hadolint(masked) if hadolint else ([], None)
    own_keys = {(f.line, f.rule) for f in own}
    heredoc_lines = {d.line for d in docs}
    kept = [f for f in found if not (f.rule in _REPLACED and (f.line, _REPLACED[f.rule]) in own_keys)
            # shellcheck reads `<<EOF` on the masked line as an unterminated here document
            and not (f.line in heredoc_lines and (f.rule.startswith("SC") or f.rule == "DL1000"))]
    findings = sorted(own + kept, key=lambda f: (f.line, LEVELS.index(f.level) if f.level in LEVELS else 9, f.rule))
    return Lint(findings, used)


def own_rules(text: str, *, healthcheck: bool = True) -> list[Finding]:
    """nbops' checks: syntax (NB000), heredocs (NB001), secrets in ARG/ENV (NB002) or in copied files
    (NB003), secret mounts (NB004, fine), missing HEALTHCHECK (NB005), latest/untagged base (NB006)."""
    out: list[Finding] = []
    for doc in mask_heredocs(text)[1]:
        if not doc.terminated:
            out.append(Finding(doc.line, "NB000", "error", f"heredoc <<{doc.delimiter} is never terminated"))
        out.append(Finding(doc.line, "NB001", "warning",
                           f"heredoc ({doc.instruction} <<{doc.delimiter}) needs the Dockerfile 1.4 frontend "
                           "(docker 23+); the built-in BuildKit of engine 20.10 reads its body as instructions. "
                           "Use `RUN set -e; a; b` or COPY a script. (hadolint cannot parse heredocs: its body is "
                           "not linted.)"))
    try:
        st = parse(text)
    except DockerfileError as err:
        return [*out, Finding(1, "NB000", "error", err.message)]
    instrs = [i for i in st.instructions if i["instruction"] != "COMMENT"]
    if not instrs:
        return [*out, Finding(1, "NB000", "error", "no instructions: add at least a FROM line")]
    first = next((i for i in instrs if i["instruction"] != "ARG"), None)
    if first is None or first["instruction"] != "FROM":
        line = (first or instrs[0])["startline"] + 1
        out.append(Finding(line, "NB000", "error", "a Dockerfile must start with FROM (after ARGs)"))
    for ins in instrs:
        kind, line, value = ins["instruction"], ins["startline"] + 1, ins["value"]
        if kind not in KNOWN_INSTRUCTIONS:
            out.append(Finding(line, "NB000", "error", f"unknown instruction {kind}"))
        elif wrong := _arguments_wrong(kind, value):
            out.append(Finding(line, "NB000", "error", wrong))
        elif kind in ("ARG", "ENV"):
            names = _env_names(value) if kind == "ENV" else [_split_arg(p)[0] for p in value.split()]
            for name in names:
                if _SECRET_NAME.search(name):
                    out.append(Finding(line, "NB002", "error",
                                       f"{kind} {name} looks like a secret: its value is stored in the image "
                                       "(config or history) for anyone who pulls it. Use `%build --secret "
                                       f"id={name.lower()},src=FILE` and `RUN --mount=type=secret,id={name.lower()}`."))
        elif kind in ("COPY", "ADD"):
            words = [w for w in value.split() if not w.startswith("--")]
            if value.lstrip().startswith("["):
                try:
                    words = [str(w) for w in json.loads(value)]
                except ValueError:
                    out.append(Finding(line, "NB000", "error", f"{kind}: malformed JSON array"))
                    continue
            if "--from=" in value:
                continue
            for src in words[:-1]:
                if _SECRET_FILE.search(src.rstrip("/")):
                    out.append(Finding(line, "NB003", "error",
                                       f"{kind} {src} copies what looks like a secret into a layer: deleting it in a "
                                       "later step does not remove it from the image. Mount it instead "
                                       "(`RUN --mount=type=secret,...`)."))
        elif kind == "RUN" and re.search(r"--mount=(?:\S*,)?type=secret", value):
            out.append(Finding(line, "NB004", "info",
                               "secret mount: the secret is readable during this step only and is not stored in "
                               "the image (needs BuildKit; nbops uses it)."))
        elif kind in ("RUN", "CMD", "ENTRYPOINT") and value.lstrip().startswith("["):
            try:
                json.loads(value)
            except ValueError:
                out.append(Finding(line, "NB000", "error", f"{kind}: malformed JSON array (exec form)"))
    stage_names = set()
    for s in st.stages:
        base = s.base_resolved
        if s.from_stage or base.lower() == "scratch" or s.base in stage_names:
            pass
        elif "$" in base:
            out.append(Finding(s.line, "NB006", "warning", f"base image {s.base} depends on an ARG with no default"))
        elif "@sha256:" in base:
            pass
        else:
            tag = base.rsplit("/", 1)[-1].partition(":")[2]
            if not tag:
                out.append(Finding(s.line, "NB006", "warning",
                                   f"base image {base} has no tag (means :latest): pin a version so a rebuild "
                                   "gives the same image"))
            elif tag == "latest":
                out.append(Finding(s.line, "NB006", "warning",
                                   f"base image {base} uses :latest: pin a version so a rebuild gives the same image"))
        if s.name:
            stage_names.add(s.name)
    if healthcheck and st.stages:
        last = st.stages[-1]
        later = [i for i in instrs if i["startline"] + 1 >= last.line]
        if not any(i["instruction"] == "HEALTHCHECK" for i in later) and not last.from_stage:
            out.append(Finding(last.line, "NB005", "warning",
                               "no HEALTHCHECK in the final stage: an orchestrator cannot tell a hung container "
                               "from a healthy one (add `HEALTHCHECK CMD ...` or `HEALTHCHECK NONE`)"))
    return out


_AT_LEAST_ONE = {"ENV", "ARG", "LABEL", "EXPOSE", "VOLUME", "SHELL", "ONBUILD", "HEALTHCHECK"}
_EXACTLY_ONE = {"WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"}  # the rest of the line is that one argument


def _arguments_wrong(kind: str, value: str) -> str | None:
    """What the engine's Dockerfile parser (20.10) says of this instruction's arguments, or None.

    The same words as ``docker build`` prints, found before anything is sent to the engine.
    """
    text = value.strip()
    if kind in _AT_LEAST_ONE and not text:
        return f"{kind} requires at least one argument"
    if kind in _EXACTLY_ONE and not text:
        return f"{kind} requires exactly one argument"
    if kind in ("ENV", "LABEL") and "=" not in text.split(None, 1)[0] and len(text.split(None, 1)) < 2:
        return f"{kind} must have two arguments: {kind} NAME=VALUE"
    if kind in ("COPY", "ADD"):
        rest = text
        while rest.startswith("--"):  # flags: --from, --chown, --chmod, ...
            rest = (rest.split(None, 1) + [""])[1]
        try:
            args = json.loads(rest) if rest.startswith("[") else rest.split()
        except ValueError:
            args = rest.split()
        if not isinstance(args, list) or len(args) < 2:
            given = "only one was provided" if args else "none was provided"
            return f"{kind} requires at least two arguments, but {given}: a source and a destination"
    if kind == "FROM":
        words = [w for w in text.split() if not w.startswith("--")]  # flags: --platform
        if not (len(words) == 1 or (len(words) == 3 and words[1].lower() == "as")):
            return "FROM requires either one or three arguments: FROM IMAGE [AS NAME]"
    return None


def _env_names(value: str) -> list[str]:
    if "=" not in value.split(None, 1)[0]:
        return [value.split(None, 1)[0]]  # ENV NAME value
    return [m.group(1) for m in re.finditer(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.-]*)=", value)]


def check_syntax(text: str) -> None:
    """Raise one clear DockerfileError (with the line) on what cannot build; no hadolint, cheap."""
    bad = [f for f in own_rules(text, healthcheck=False) if f.rule in SYNTAX_RULES]
    if bad:
        f = bad[0]
        raise DockerfileError(f"line {f.line}: {f.message}", hint="fix the Dockerfile at that line", line=f.line)


# -- the cell -------------------------------------------------------------------------------------
@dataclass
class DockerfileCell:
    """A Dockerfile written in a ``%%dockerfile NAME`` cell, with its lint findings."""

    name: str
    text: str
    context: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    lint_result: Lint | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # a UTF-8 byte order mark (editors on Windows) is accepted by BuildKit; the parser would
        # otherwise read the first instruction as "\ufeffFROM"
        self.text = self.text.removeprefix("\ufeff")

    def parser(self):
        from dockerfile_parse import DockerfileParser

        return DockerfileParser(fileobj=io.BytesIO(mask_heredocs(self.text)[0].encode()))

    @property
    def structure(self) -> list[dict[str, Any]]:
        return parse(self.text).instructions

    def parse(self, buildargs: Mapping[str, str] | None = None) -> Structure:
        return parse(self.text, buildargs)

    @property
    def stages(self):
        return self.parse().to_frame()

    def lint(self, *, hadolint: bool = True, healthcheck: bool = True) -> Lint:
        self.lint_result = lint(self.text, hadolint=hadolint, healthcheck=healthcheck)
        return self.lint_result

    @property
    def findings(self):
        return (self.lint_result or self.lint()).to_frame()

    def check(self) -> None:
        """Fail fast, with the line, on what cannot build (syntax); other findings are only shown."""
        res = self.lint_result or self.lint()
        bad = res.syntax_errors
        if bad:
            f = bad[0]
            raise DockerfileError(f"Dockerfile {self.name!r} line {f.line}: {f.message}",
                                  hint="fix the cell at that line", line=f.line, findings=res.findings)

    def __repr__(self) -> str:
        n = sum(1 for i in self.structure if i["instruction"] != "COMMENT")
        extra = f", {len(self.lint_result)} lint findings" if self.lint_result is not None else ""
        return f"<Dockerfile {self.name}: {n} instructions{extra}>"

    def _repr_html_(self) -> str:
        st = self.parse()
        facts = {"stages": " → ".join(f"{s.name or s.index}({s.base_resolved})" for s in st.stages) or "-"}
        head = (f"<div><b>Dockerfile {esc(self.name)}</b> stored — build it with "
                f"<code>%build {esc(self.name)} -t TAG</code></div>")
        res = self.lint_result or self.lint()
        return head + card("", facts, res.html())

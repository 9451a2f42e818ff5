"""A naming scheme for images: a declared template rendered from the notebook repo's git state, and
the policy checks run before a push.

Template: ``{registry}/{team}/{name}:{git_tag|git_sha}`` — ``{a|b}`` takes the first non-empty field.
Fields: ``registry``, ``team``, ``name`` (the image's repository, without registry), ``tag`` (its tag),
``git_tag`` (the tag at HEAD — empty when there is none or the tree is dirty: a dirty tree is not the
release), ``git_sha`` (short sha), ``git_branch`` (made tag-safe), ``git_dirty`` (``-dirty`` or empty),
plus any keyword given.

Policy: a reference must match docker's reference grammar (distribution/reference); ``latest`` is
refused for a protected registry; a tag matching the immutable pattern may not be overwritten in the
registry with different content.
"""

from __future__ import annotations

import re
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, NbopsError, PolicyError

# distribution/reference grammar (reference.go / regexp.go)
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
REFERENCE = re.compile(rf"^{_NAME}(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
NAME_MAX = 255
MAY_BE_EMPTY = {"git_dirty"}  # a suffix: empty on a clean tree
DEFAULT_IMMUTABLE = r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$"


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``domain`` is None for a name without a registry part."""

    domain: str | None
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(ref: str) -> Reference:
    """Parse ``ref`` with docker's grammar; :class:`PolicyError` saying what is wrong otherwise."""
    m = REFERENCE.match(ref or "")
    if not m:
        raise PolicyError(f"{ref!r} is not a valid image reference", hint=_why_invalid(ref or ""), ref=ref)
    # "host/x" where host has no dot, colon or is not localhost is a path, not a domain (docker's rule)
    domain, path = m.group("domain"), m.group("path")
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        if not re.fullmatch(_PATH_COMPONENT, domain):
            raise PolicyError(f"{ref!r} is not a valid image reference",
                              hint="repository names are lowercase letters, digits and . _ - separators", ref=ref)
        path, domain = f"{domain}/{path}", None
    name = f"{domain}/{path}" if domain else path
    if len(name) > NAME_MAX:
        raise PolicyError(f"the repository name in {ref!r} is longer than {NAME_MAX} characters", ref=ref)
    return Reference(domain, path, m.group("tag"), m.group("digest"))


def _why_invalid(ref: str) -> str:
    if not ref:
        return "give a name like registry:5000/team/app:1.0"
    if any(c.isspace() for c in ref):
        return "remove the spaces"
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repo, tag = (name.rsplit(":", 1) if ":" in last else (name, None))
    if any(c.isupper() for c in repo.rsplit("/", 1)[-1]):
        return "repository names must be lowercase"
    if tag is not None and not re.fullmatch(_TAG, tag):
        return "a tag is 1-128 characters of letters, digits, _ . - and cannot start with . or -"
    if "//" in repo or repo.endswith("/") or repo.startswith("/"):
        return "empty path component (double or trailing /)"
    return "use [REGISTRY[:PORT]/]path/name[:TAG][@sha256:DIGEST] with lowercase a-z 0-9 and . _ - separators"


# -- git state --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GitState:
    """The git facts a name can be made from."""

    root: str
    sha: str
    tag: str
    branch: str
    dirty: bool

    def fields(self) -> dict[str, str]:
        return {"git_sha": self.sha, "git_tag": "" if self.dirty else self.tag, "git_branch": _tag_safe(self.branch),
                "git_dirty": "-dirty" if self.dirty else ""}


def git_state(path: str | Path | None = None, *, timeout: float = 10.0) -> GitState:
    """Read the git state of the repository holding ``path`` (default: the working directory)."""
    where = str(Path(path or ".").resolve())

    def git(*args: str, check: bool = True) -> str:
        try:
            res = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"git could not run in {where}: {exc}", hint="install git") from None
        if check and res.returncode != 0:
            raise ConfigError(f"{where} is not in a git repository with a commit: {res.stderr.strip()}",
                              hint="commit first, or use a template without {git_…} fields")
        return res.stdout.strip() if res.returncode == 0 else ""

    root = git("rev-parse", "--show-toplevel")
    sha = git("rev-parse", "--short=12", "HEAD")
    tag = git("describe", "--tags", "--exact-match", "HEAD", check=False)
    branch = git("symbolic-ref", "--short", "-q", "HEAD", check=False) or "detached"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return GitState(root=root, sha=sha, tag=tag, branch=branch, dirty=dirty)


def _tag_safe(text: str) -> str:
    safe = re.sub(r"[^\w.-]+", "-", text).lstrip(".-")
    return safe[:128]


# -- templates --------------------------------------------------------------------------------
def template_fields(template: str) -> list[list[str]]:
    """The fields of ``template``, each as its list of alternatives (``{a|b}`` -> ``['a', 'b']``)."""
    out = []
    for _, field_name, spec, conv in string.Formatter().parse(template):
        if field_name is None:
            continue
        if spec or conv:
            raise ConfigError(f"the name template {template!r} uses a format spec or conversion",
                              hint="use plain {field} or {a|b} alternatives")
        out.append([f.strip() for f in field_name.split("|")])
    return out


def render(template: str, *, git: GitState | None = None, repo_path: str | Path | None = None,
           **values: Any) -> str:
    """Render ``template``; git fields come from ``git`` (or the repository at ``repo_path``)."""
    fields = template_fields(template)
    wanted = {name for alts in fields for name in alts}
    if git is None and any(n.startswith("git_") for n in wanted):
        git = git_state(repo_path)
    known: dict[str, str] = {**(git.fields() if git else {}),
                             **{k: "" if v is None else str(v) for k, v in values.items()}}
    out = []
    for literal, field_name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field_name is None:
            continue
        alts = [f.strip() for f in field_name.split("|")]
        unknown = [a for a in alts if a not in known]
        if unknown and all(a not in known for a in alts):
            raise ConfigError(f"the name template {template!r} uses unknown field(s) {', '.join(unknown)}",
                              hint=f"known fields: {', '.join(sorted(known))}")
        value = next((known[a] for a in alts if known.get(a)), "")
        if not value and not set(alts) & MAY_BE_EMPTY:
            raise ConfigError(f"the name template field {{{field_name}}} is empty here",
                              hint="add an alternative, e.g. {git_tag|git_sha}, or set the value (%config NbopsMagics…)")
        out.append(value)
    return re.sub(r"(?<!:)/{2,}", "/", "".join(out))


def name_for(image: str, template: str, *, registry: str | None = None, repo_path: str | Path | None = None,
             git: GitState | None = None, **values: Any) -> str:
    """The reference ``image`` gets under ``template`` (``name`` and ``tag`` come from ``image``)."""
    ref = parse_reference(image)
    name = ref.path.rsplit("/", 1)[-1]
    return render(template, git=git, repo_path=repo_path, registry=registry or "", name=name,
                  path=ref.path, tag=ref.tag or "", **values)


# -- policy -----------------------------------------------------------------------------------
@dataclass
class Policy:
    """What a push must respect. ``protected``: registry hosts where ``latest`` is refused.

    ``immutable``: a regex; an existing tag matching it may not be pointed at other content.
    """

    protected: list[str] = field(default_factory=list)
    immutable: str | None = DEFAULT_IMMUTABLE

    def check(self, ref: str, *, local_digests: list[str] | None = None, registry: Any = None) -> Reference:
        """Raise :class:`PolicyError` if pushing to ``ref`` breaks a rule; return the parsed reference.

        ``registry`` is a :class:`nbops.registry.Registry` for the target, used to see whether an
        immutable tag already exists; ``local_digests`` the manifest digests the local image is
        already known by there (re-pushing identical content is not an overwrite).
        """
        parsed = parse_reference(ref)
        if parsed.digest:
            raise PolicyError(f"cannot push to a digest reference {ref}", hint="push to a tag", ref=ref)
        tag = parsed.tag or "latest"
        if tag == "latest" and parsed.domain and self._protected(parsed.domain):
            raise PolicyError(f"{parsed.domain} is a protected registry: no mutable 'latest' tag ({ref})",
                              hint="push a versioned tag, e.g. from the naming template {git_tag|git_sha}",
                              ref=ref)
        if self.immutable and re.fullmatch(self.immutable, tag) and registry is not None:
            try:
                remote = registry.digest(parsed.path, tag)
            except NbopsError as exc:
                if type(exc).__name__ == "NotFound":
                    return parsed
                raise
            if remote and remote not in (local_digests or []):
                raise PolicyError(f"{ref} already exists ({remote[:19]}…) and tag {tag!r} is immutable",
                                  hint="release a new version tag; an immutable tag is never overwritten",
                                  ref=ref, remote_digest=remote)
        return parsed

    def _protected(self, domain: str) -> bool:
        return any(domain == p or domain.split(":")[0] == p for p in self.protected)


__all__ = ["Reference", "parse_reference", "GitState", "git_state", "render", "name_for", "template_fields",
           "Policy", "REFERENCE"]

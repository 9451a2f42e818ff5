"""Naming scheme: docker's reference grammar, templates rendered from a real temp git repo, policy."""

from __future__ import annotations

import subprocess

import pytest

from nbops.errors import ConfigError, PolicyError
from nbops.naming import Policy, git_state, name_for, parse_reference, render


@pytest.mark.parametrize("ref, domain, path, tag", [
    ("hello", None, "hello", None),
    ("hello:1.0", None, "hello", "1.0"),
    ("team/app:v2", None, "team/app", "v2"),
    ("10.1.2.1:5000/team/app:1", "10.1.2.1:5000", "team/app", "1"),
    ("localhost/app", "localhost", "app", None),
    ("reg.example.com/a/b/c_d-e.f:TAG_x", "reg.example.com", "a/b/c_d-e.f", "TAG_x"),
    ("app@sha256:" + "a" * 64, None, "app", None),
])
def test_valid_references(ref, domain, path, tag):
    parsed = parse_reference(ref)
    assert (parsed.domain, parsed.path, parsed.tag) == (domain, path, tag)
    assert str(parsed) == ref


@pytest.mark.parametrize("ref, why", [
    ("Team/App:1", "lowercase"),
    ("app:-bad", "tag"),
    ("app:" + "x" * 129, "tag"),
    ("reg:5000//app", "empty path"),
    ("app name", "spaces"),
    ("", "give a name"),
    ("app@sha256:abc", "use"),
])
def test_invalid_references_say_why(ref, why):
    with pytest.raises(PolicyError) as err:
        parse_reference(ref)
    assert why in err.value.one_line()
    assert "\n" not in err.value.one_line()


@pytest.fixture
def repo(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "feature/x")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "nb.ipynb").write_text("{}")
    git("add", ".")
    git("commit", "-qm", "one")
    return tmp_path, git


def test_template_from_git_state(repo):
    path, git = repo
    state = git_state(path)
    assert state.branch == "feature/x" and not state.dirty and state.tag == ""
    tpl = "{registry}/{team}/{name}:{git_tag|git_sha}"
    ref = name_for("hello:dev", tpl, registry="10.1.2.1:5000", team="ml", repo_path=path)
    assert ref == f"10.1.2.1:5000/ml/hello:{state.sha}"
    git("tag", "v1.2.0")
    assert name_for("hello:dev", tpl, registry="10.1.2.1:5000", team="ml", repo_path=path) == "10.1.2.1:5000/ml/hello:v1.2.0"
    # a dirty tree is not the release: the tag is not used, the dirty flag is available
    (path / "nb.ipynb").write_text('{"changed": 1}')
    dirty = git_state(path)
    assert dirty.dirty
    assert render("{name}:{git_tag|git_sha}{git_dirty}", repo_path=path, name="hello") == f"hello:{dirty.sha}-dirty"
    assert render("{name}:{git_branch}", repo_path=path, name="hello") == "hello:feature-x"


def test_template_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown field"):
        render("{registry}/{nope}", registry="r:5000")
    with pytest.raises(ConfigError, match="empty"):
        render("{registry}/{team}/x", registry="r:5000", team="")
    with pytest.raises(ConfigError, match="not in a git repository"):
        render("x:{git_sha}", repo_path=tmp_path)


class FakeRegistry:
    """Stands in for the registry's HEAD in this unit test only (the real one is in tests/engine)."""

    def __init__(self, tags):
        self.tags = tags

    def digest(self, repo, tag):
        from nbops.errors import NotFound

        if (repo, tag) not in self.tags:
            raise NotFound("no such manifest")
        return self.tags[(repo, tag)]


def test_policy_rules():
    pol = Policy(protected=["reg:5000"])
    with pytest.raises(PolicyError, match="protected registry"):
        pol.check("reg:5000/app:latest")
    with pytest.raises(PolicyError, match="protected registry"):
        pol.check("reg:5000/app")  # no tag means latest
    pol.check("other:5000/app:latest")
    reg = FakeRegistry({("app", "1.0.0"): "sha256:aaa"})
    with pytest.raises(PolicyError, match="immutable"):
        pol.check("reg:5000/app:1.0.0", registry=reg, local_digests=["sha256:bbb"])
    pol.check("reg:5000/app:1.0.0", registry=reg, local_digests=["sha256:aaa"])  # same content: no overwrite
    pol.check("reg:5000/app:1.0.1", registry=reg)
    pol.check("reg:5000/app:dev", registry=FakeRegistry({("app", "dev"): "sha256:x"}))  # mutable tag

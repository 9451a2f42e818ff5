"""Naming scheme and policy declared in [tool.nbops] of pyproject.toml, read by the magics (no engine)."""

from __future__ import annotations

import subprocess

import pytest

from nbops.errors import PolicyError


def test_pyproject_declares_the_naming_scheme(tmp_path, monkeypatch, ipshell):
    from nbops.magics import NbopsMagics

    (tmp_path / "pyproject.toml").write_text(
        '[tool.nbops]\nregistry = "10.77.1.1:5000"\nteam = "data"\n'
        'name_template = "{registry}/{team}/{name}:{git_tag|git_sha}{git_dirty}"\n'
        'protected_registries = ["10.77.1.1:5000"]\n')
    for args in (["init", "-q"], ["config", "user.email", "t@e.x"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    monkeypatch.chdir(tmp_path)
    magics = NbopsMagics(ipshell)
    assert magics.team == "data" and magics.protected_registries == ["10.77.1.1:5000"]
    ipshell.register_magics(magics)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert ipshell.run_line_magic("nbops", "name app:dev") == f"10.77.1.1:5000/data/app:{sha}"
    subprocess.run(["git", "-C", str(tmp_path), "tag", "1.4.0"], check=True)
    assert ipshell.run_line_magic("nbops", "name app:dev") == "10.77.1.1:5000/data/app:1.4.0"
    (tmp_path / "pyproject.toml").write_text((tmp_path / "pyproject.toml").read_text() + "# edit\n")
    assert ipshell.run_line_magic("nbops", "name app:dev") == f"10.77.1.1:5000/data/app:{sha}-dirty"
    with pytest.raises(PolicyError, match="protected registry"):
        magics.policy().check("10.77.1.1:5000/data/app:latest")

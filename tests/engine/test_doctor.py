"""The preflight against the real lab engine."""

from __future__ import annotations

import pytest

from nbops import doctor

pytestmark = pytest.mark.engine


def test_doctor_on_the_lab(engine, lab):
    report = doctor.doctor(engine)
    df = report.to_frame()
    checks = set(df["check"])
    assert {"engine version", "API version", "storage driver", "cgroup driver", "live-restore", "free disk",
            "registry", "engine versions"} <= checks
    assert df[df["check"] == "storage driver"]["value"].iloc[0] == "overlay2"
    assert df[df["check"] == "registry"]["status"].iloc[0] == "ok", "the node's daemon resolves the lab image"
    assert df[df["check"] == "engine version"]["value"].iloc[0].startswith("20.10")
    assert report.ok
    assert "nbops doctor: OK" in repr(report) and "<table" in report._repr_html_()


def test_doctor_flags_an_unreachable_registry(engine, lab):
    report = doctor.doctor(engine, registry_ref="127.0.0.1:9/nothing/here:latest")
    reg = report.to_frame().query("check == 'registry'")
    assert reg["status"].iloc[0] == "fail" and not report.ok


def test_doctor_cli(lab, capsys):
    from nbops.cli import main

    assert main(["doctor"]) == 0
    assert "storage driver" in capsys.readouterr().out

"""Engine and cluster preflight (``nbops doctor`` / ``%nbops doctor``).

Per node: engine and API version, storage driver, cgroup driver, live-restore (and that it does not
apply in swarm mode), free disk under the data root, and whether the node's own daemon can reach the
registry (``GET /distribution/REF/json`` makes the daemon itself ask the registry). Across nodes:
engine or API versions that differ — "the version of the engine matters".
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ._display import card, frame_html, human_size
from .engine import Engine

MIN_FREE = 2 * 1024 ** 3


@dataclass
class Check:
    node: str
    check: str
    value: str
    status: str  # ok | warn | fail | info
    hint: str = ""


class DoctorReport:
    """The preflight's findings: ``.to_frame()``, ``.problems``, ``.ok`` (no ``fail``)."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status in ("warn", "fail")]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.checks], columns=["node", "check", "value", "status", "hint"])

    def __repr__(self) -> str:
        width = max((len(c.node) for c in self.checks), default=4)
        lines = [f"nbops doctor: {'OK' if self.ok else 'PROBLEMS'} ({len(self.problems)} warning(s)/failure(s))"]
        for c in self.checks:
            mark = {"ok": "✓", "warn": "!", "fail": "✗", "info": "·"}[c.status]
            lines.append(f" {mark} {c.node:<{width}}  {c.check:<18} {c.value}" + (f"  — {c.hint}" if c.hint else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return card("doctor", {"status": "ok" if self.ok else "problems", "findings": len(self.problems)},
                    frame_html(self.to_frame()))


def _node_engines(engine: Engine) -> list[tuple[str, Engine]]:
    """The connected engine plus, when it belongs to the local lab, every other lab node's engine."""
    from .deploy import lab_state_for

    out = [(engine.info.get("Name") or "engine", engine)]
    st = lab_state_for(engine.address)
    if st:
        for n in st.nodes:
            if n.socket != engine.address:
                try:
                    out.append((n.name, Engine.connect(n.socket, timeout=10)))
                except Exception:
                    out.append((n.name, None))  # type: ignore[arg-type]
    return out


def _registry_ref(engine: Engine) -> str | None:
    from .deploy import lab_state_for
    from .distribute import lab_registry
    from .lab import BUSYBOX_IMAGE

    st = lab_state_for(engine.address)
    reg = st.registry if st else lab_registry()
    return f"{reg}/{BUSYBOX_IMAGE}" if reg else None


def doctor(engine: Engine | None = None, *, registry_ref: str | None = None) -> DoctorReport:
    """Check every reachable node; ``registry_ref`` is an image reference each node should resolve."""
    engine = engine or Engine.connect()
    ref = registry_ref or _registry_ref(engine)
    checks: list[Check] = []
    versions: dict[str, tuple[str, str]] = {}
    for name, eng in _node_engines(engine):
        if eng is None:
            checks.append(Check(name, "engine", "unreachable", "fail", "is its dockerd running? (nbops lab status)"))
            continue
        try:
            info, ver = eng.info, eng.version
        except Exception as exc:
            checks.append(Check(name, "engine", f"unreachable: {exc}", "fail", "check the daemon"))
            continue
        versions[name] = (ver.get("Version", "?"), ver.get("ApiVersion", "?"))
        checks.append(Check(name, "engine version", ver.get("Version", "?"), "info"))
        checks.append(Check(name, "API version", f"{ver.get('ApiVersion')} (min {ver.get('MinAPIVersion')}), "
                                                 f"client uses {eng.api_version}", "info"))
        checks.append(Check(name, "os/kernel", f"{info.get('OperatingSystem')} / {info.get('KernelVersion')}", "info"))
        driver = info.get("Driver", "?")
        checks.append(Check(name, "storage driver", driver, "ok" if driver == "overlay2" else "warn",
                            "" if driver == "overlay2" else "overlay2 is the supported default"))
        checks.append(Check(name, "cgroup driver", f"{info.get('CgroupDriver')} (cgroup v{info.get('CgroupVersion', '?')})",
                            "info"))
        swarm = (info.get("Swarm") or {}).get("LocalNodeState", "inactive")
        live = bool(info.get("LiveRestoreEnabled"))
        if live and swarm == "active":
            checks.append(Check(name, "live-restore", "enabled, but in swarm mode", "warn",
                                "live-restore does not apply to swarm mode: swarm restarts tasks itself"))
        else:
            checks.append(Check(name, "live-restore", "enabled" if live else "disabled", "ok" if live or swarm == "active" else "info",
                                "" if live or swarm == "active" else "containers stop when dockerd restarts (dockerd --live-restore)"))
        checks.append(Check(name, "swarm", f"{swarm}" + (" (manager)" if (info.get("Swarm") or {}).get("ControlAvailable") else ""),
                            "info"))
        root = info.get("DockerRootDir", "")
        if root and os.path.isdir(root):
            free = shutil.disk_usage(root).free
            checks.append(Check(name, "free disk", f"{human_size(free)} under {root}", "ok" if free >= MIN_FREE else "warn",
                                "" if free >= MIN_FREE else "prune images (docker system prune) or grow the disk"))
        else:
            checks.append(Check(name, "free disk", f"unknown ({root} is not on this machine)", "info"))
        if ref:
            try:
                eng.call(f"resolve {ref}", eng.api.inspect_distribution, ref)
                checks.append(Check(name, "registry", f"{ref.split('/')[0]} reachable from the node", "ok"))
            except Exception as exc:
                checks.append(Check(name, "registry", f"{ref.split('/')[0]} NOT reachable: {str(exc)[:120]}", "fail",
                                    "is the registry up, and listed in the engine's insecure-registries?"))
    if swarm_versions := _swarm_versions(engine):
        for host, v in swarm_versions.items():
            versions.setdefault(host, (v, "?"))
    engines = {v[0] for v in versions.values()}
    apis = {v[1] for v in versions.values() if v[1] != "?"}
    if len(engines) > 1:
        checks.append(Check("cluster", "engine versions", ", ".join(f"{n}={v[0]}" for n, v in sorted(versions.items())),
                            "warn", "mixed engine versions: features and API behaviour differ — upgrade to one version"))
    else:
        checks.append(Check("cluster", "engine versions", f"all {next(iter(engines), '?')} ({len(versions)} node(s))", "ok"))
    if len(apis) > 1:
        checks.append(Check("cluster", "API versions", ", ".join(sorted(apis)), "warn",
                            "mixed API versions: pin the client to the lowest"))
    return DoctorReport(checks)


def _swarm_versions(engine: Engine) -> dict[str, str]:
    """Engine versions the swarm reports for nodes we cannot reach directly."""
    sw = engine.info.get("Swarm") or {}
    if sw.get("LocalNodeState") != "active" or not sw.get("ControlAvailable"):
        return {}
    from .deploy.swarm import swarm_nodes

    return {n["hostname"]: n["engine"] for n in swarm_nodes(engine).values() if n.get("engine")}


def main(argv: list[str]) -> int:
    """``nbops doctor [--host ADDRESS]``: exit 1 when a check fails."""
    import argparse

    p = argparse.ArgumentParser(prog="nbops doctor", description="engine and cluster preflight")
    p.add_argument("--host", help="engine address (default $DOCKER_HOST, else the lab)")
    p.add_argument("--registry-ref", help="an image reference every node should resolve")
    args = p.parse_args(argv)
    report = doctor(Engine.connect(args.host), registry_ref=args.registry_ref)
    print(repr(report))
    return 0 if report.ok else 1


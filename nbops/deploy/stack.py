"""The stack backend: a compose file deployed with ``docker stack deploy`` (Debian's CLI 20.10 — the SDK
has no stack API), then every service of the stack watched like a swarm service (events + tasks)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DeployError
from . import DeploySpec, Rollout, UpdateState, register
from .swarm import Swarm

NAMESPACE = "com.docker.stack.namespace"
RANK = {"healthy": 0, "rolled_back": 1, "paused": 2, "rollback_paused": 3, "failing": 4, "timeout": 5}


@register
class Stack(Swarm):
    name = "stack"
    needs = "a swarm manager and a docker CLI (Debian's docker.io ships /usr/bin/docker)"

    @classmethod
    def available(cls, engine) -> tuple[bool, str]:
        ok, why = super().available(engine)
        if not ok:
            return ok, why
        if not engine.cli().path:
            return False, "no docker CLI found"
        return True, ""

    def validate(self, spec: DeploySpec) -> list[str]:
        if not spec.compose:
            raise ConfigError("the stack orchestrator deploys a compose file", hint="%deploy --orchestrator stack --compose FILE --name STACK")
        if not Path(spec.compose).is_file():
            raise ConfigError(f"no compose file at {spec.compose}", hint="write it first (e.g. with %%writefile)")
        if spec.action == "rollback":
            raise ConfigError("a stack rolls back service by service", hint="%deploy --rollback STACK_SERVICE (swarm)")
        ok, why = self.available(self.engine)
        if not ok:
            raise ConfigError(f"{why} ({self.engine.address})", hint="use the lab (`nbops lab up`)")
        return []

    def _stack_services(self, name: str) -> list[dict[str, Any]]:
        return self.engine.call(f"list services of stack {name}", self.engine.api.services,
                                filters={"label": f"{NAMESPACE}={name}"})

    def apply(self, spec: DeploySpec) -> Any:
        before = {s["Spec"]["Name"]: s.get("UpdateStatus") for s in self._stack_services(spec.name)}
        since = time.time() - 1
        res = self.engine.cli().run(["stack", "deploy", "--resolve-image", "never", "-c", str(spec.compose), spec.name],
                                    timeout=120, capture_output=True, text=True)
        if res.returncode != 0:
            raise DeployError(f"docker stack deploy {spec.name} failed: {(res.stderr or res.stdout).strip()[-400:]}",
                              hint="check the compose file (version 3.x, deploy: keys)", output_tail=res.stderr.splitlines()[-20:])
        services = self._stack_services(spec.name)
        if not services:
            raise DeployError(f"stack {spec.name} has no services after deploy", output_tail=res.stdout.splitlines()[-20:])
        handles = []
        for s in services:
            name = s["Spec"]["Name"]
            handles.append((name, s, {"service_id": s["ID"], "before": before.get(name), "since": since,
                                      "action": "update" if name in before else "create"}))
        return handles

    def watch(self, spec: DeploySpec, handle: Any, deadline: float) -> Rollout:
        total = Rollout(outcome="healthy", events=[], tasks=[])
        for name, svc, h in handle:
            replicas = (svc["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas", 1)
            sub = dataclasses.replace(spec, name=name, replicas=replicas, compose=None, probe=False)
            part = super().watch(sub, h, deadline)
            total.events += part.events
            total.tasks += [{"service": name, **t} for t in part.tasks]
            total.updates += [UpdateState(u.ts, u.state, f"{name}: {u.message}".rstrip(": ")) for u in part.updates]
            total.failed_tasks += [{"service": name, **f} for f in part.failed_tasks]
            if RANK.get(part.outcome, 9) > RANK.get(total.outcome, 9):
                total.outcome = part.outcome
        total.events.sort(key=lambda e: e.ts)
        total.image = ", ".join(sorted({t["image"].split("@")[0] for t in total.tasks}))
        return total

    def endpoints(self, spec: DeploySpec) -> list[tuple[str, int]]:
        out = []
        for s in self._stack_services(spec.name):
            out += super().endpoints(dataclasses.replace(spec, name=s["Spec"]["Name"], compose=None))
        return out


def remove(name: str, *, engine=None) -> None:
    """``docker stack rm NAME``."""
    from ..engine import Engine

    engine = engine or Engine.connect()
    engine.cli().run(["stack", "rm", name], timeout=60, capture_output=True, text=True)

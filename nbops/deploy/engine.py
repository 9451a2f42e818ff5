"""The single-engine backend (no swarm): replace a container by a new one, gated on its HEALTHCHECK.

The new container (``NAME-gN``, label ``org.nbops.service=NAME``) starts beside the old one; the old
one is stopped only once the new one is healthy (or, without a HEALTHCHECK, running). If the new one
turns unhealthy, exits, or is not healthy by the deadline, it is removed and the old one keeps (or
resumes) serving: the rollout is rolled back. With a fixed host port both cannot run at once, so the
old one is stopped first and started again on failure. The previous generation is kept stopped, so
``action="rollback"`` can bring it back the same way.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigError
from . import DeploySpec, Orchestrator, Rollout, RolloutEvent, UpdateState, register
from ._events import EventStream, event_ts, health_of

LABEL = "org.nbops.service"
GEN = "org.nbops.generation"
POLL = 0.2


@register
class EngineOrchestrator(Orchestrator):
    name = "engine"
    needs = "any single Docker engine (no swarm needed)"

    def validate(self, spec: DeploySpec) -> list[str]:
        warnings = super().validate(spec)
        unsupported = [name for name, used in (
            ("constraints", spec.constraints), ("preferences", spec.preferences), ("secrets", spec.secrets),
            ("configs", spec.configs), ("mode=global", spec.mode == "global"), ("compose", spec.compose),
            ("max_per_node", spec.max_per_node)) if used]
        if unsupported:
            raise ConfigError(f"the engine orchestrator does not support {', '.join(unsupported)}",
                              hint="use --orchestrator swarm (or stack for a compose file)")
        if spec.replicas != 1:
            raise ConfigError(f"the engine orchestrator runs one container, not {spec.replicas}",
                              hint="use --orchestrator swarm for replicas")
        cond = (spec.restart or "unless-stopped").split(":")[0]
        if cond not in ("no", "on-failure", "always", "unless-stopped"):
            raise ConfigError(f"bad restart policy {spec.restart!r}", hint="use no, on-failure[:N], always or unless-stopped")
        if spec.action == "rollback" and not self._containers(spec.name, running=False)[1:]:
            raise ConfigError(f"no previous container of {spec.name!r} to roll back to", hint="deploy twice first")
        return warnings

    def _containers(self, name: str, *, running: bool) -> list[Any]:
        """This service's containers, newest generation first."""
        found = self.engine.call("list containers", self.engine.client.containers.list, all=not running,
                                 filters={"label": f"{LABEL}={name}"})
        return sorted(found, key=lambda c: int(c.labels.get(GEN, "0")), reverse=True)

    # -- apply ------------------------------------------------------------------------------
    def apply(self, spec: DeploySpec) -> Any:
        client = self.engine.client
        every = self._containers(spec.name, running=False)
        old = [c for c in every if c.status in ("running", "restarting")]
        if spec.action == "rollback":
            current = old[0] if old else every[0]
            previous = next(c for c in every if c.id != current.id)
            spec.image = previous.labels.get("org.nbops.image") or previous.image.tags[0]
            fixed = any(b and b[0].get("HostPort")
                        for b in (previous.attrs["HostConfig"].get("PortBindings") or {}).values())
            if fixed:
                for c in old:
                    self.engine.call(f"stop {c.name}", c.stop, timeout=int(spec.stop_grace or 10))
            self.engine.call(f"start {previous.name}", previous.start)
            return {"new": previous, "old": old, "stopped_first": fixed, "action": "rollback", "keep": every}
        gen = 1 + max((int(c.labels.get(GEN, "0")) for c in every), default=0)
        ports = {f"{p.target}/{p.protocol}": p.published for p in spec.publish}
        fixed = any(p.published is not None for p in spec.publish)
        cond, _, attempts = (spec.restart or "unless-stopped").partition(":")
        kwargs: dict[str, Any] = dict(
            name=f"{spec.name}-g{gen}", detach=True, ports=ports or None, environment=spec.env or None,
            labels={LABEL: spec.name, GEN: str(gen), "org.nbops.image": spec.image, **spec.labels},
            restart_policy={"Name": cond, **({"MaximumRetryCount": int(attempts)} if attempts else {})},
        )
        if spec.command:
            kwargs["command"] = spec.command
        if spec.health:
            kwargs["healthcheck"] = spec.health.to_api()
        if spec.init:
            kwargs["init"] = True
        if spec.cpus:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
        if spec.mounts:
            from docker.types import Mount

            from .swarm import parse_mount

            kwargs["mounts"] = [Mount(m["Target"], m.get("Source"), type=m["Type"].lower(), read_only=m.get("ReadOnly", False))
                                for m in map(parse_mount, spec.mounts)]
        if spec.networks:
            kwargs["network"] = spec.networks[0]
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if fixed:  # both cannot bind the same host port: stop-first
            for c in old:
                self.engine.call(f"stop {c.name}", c.stop, timeout=int(spec.stop_grace or 10))
        new = self.engine.call(f"run {spec.image} as {spec.name}", client.containers.run, spec.image, **kwargs)
        return {"new": new, "old": old, "stopped_first": fixed, "action": "deploy", "keep": every}

    # -- watch ------------------------------------------------------------------------------
    def watch(self, spec: DeploySpec, handle: Any, deadline: float) -> Rollout:
        new, old = handle["new"], handle["old"]
        ids = {new.id, *(c.id for c in old)}
        stream = EventStream(self.engine, since=time.time() - 1, until=time.time() + spec.timeout + 2,
                             keep=lambda ev: ev.get("Actor", {}).get("ID") in ids and not ev.get("Action", "").startswith("exec_"),
                             types=("container",)).start()
        events: list[RolloutEvent] = []
        updates = [UpdateState(ts=time.time(), state="updating", message=f"start {new.name}")]
        failed: list[dict[str, Any]] = []
        host = self.engine.info.get("Name")
        seen: dict[str, tuple] = {}
        outcome = "timeout"
        healthy_since: float | None = None

        def row(c: Any, ts: float, message: str = "") -> None:
            state = c.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            key = (state.get("Status"), health)
            if seen.get(c.id) == key and not message:
                return
            seen[c.id] = key
            events.append(RolloutEvent(ts=ts, service=spec.name, task=c.id, slot=int(c.labels.get(GEN, "0")),
                                       node=host, image=c.labels.get("org.nbops.image", ""), state=_state(state),
                                       health=health, message=message or state.get("Error", "")))

        try:
            for c in old:
                self._reload(c)
                row(c, time.time())
            while True:
                now = time.time()
                self._reload(new)
                row(new, now)
                for ev in stream.drain():
                    c = new if ev["Actor"]["ID"] == new.id else next((o for o in old if o.id == ev["Actor"]["ID"]), None)
                    if c is not None:
                        h = health_of(ev.get("Action", ""))
                        msg = ev["Action"] if ev["Action"] != "die" else f"die exitCode={ev['Actor']['Attributes'].get('exitCode')}"
                        events.append(RolloutEvent(ts=event_ts(ev), service=spec.name, task=c.id,
                                                   slot=int(c.labels.get(GEN, "0")), node=host,
                                                   image=c.labels.get("org.nbops.image", ""),
                                                   state=_state(c.attrs["State"]), health=h or (c.attrs["State"].get("Health") or {}).get("Status"),
                                                   message=f"event: {msg}"))
                state = new.attrs["State"]
                health = (state.get("Health") or {}).get("Status")
                self.live_endpoints = self._endpoints_of([new, *old])
                if state.get("Status") == "running" and health in (None, "healthy"):
                    healthy_since = healthy_since or now
                    if health == "healthy" or now - healthy_since > 1.0:
                        outcome = "healthy"
                        break
                else:
                    healthy_since = None
                exited = state.get("Status") in ("exited", "dead") and (spec.restart or "").split(":")[0] in ("no", "on-failure")
                if health == "unhealthy" or exited:
                    outcome = "failed"
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL)
            if outcome == "healthy":
                # hand over first: clients following the endpoint list move to the new container,
                # then the old one stops
                self.live_endpoints = self._endpoints_of([new])
                time.sleep(0.3)
                for c in old:
                    if c.id != new.id:
                        self.engine.call(f"stop {c.name}", c.stop, timeout=int(spec.stop_grace or 10))
                        self._reload(c)
                        row(c, time.time(), "stopped: replaced")
                self._prune(spec.name, keep={new.id, *(c.id for c in old)})
                updates.append(UpdateState(ts=time.time(), state="completed", message=f"{new.name} healthy"))
                if handle["action"] == "rollback":
                    outcome = "rolled_back"
            else:
                why = new.attrs["State"].get("Error") or _last_health_log(new) or f"not healthy by the deadline ({outcome})"
                failed.append({"ts": time.time(), "task": new.id, "slot": int(new.labels.get(GEN, "0")), "node": host,
                               "image": new.labels.get("org.nbops.image", ""), "state": health or _state(new.attrs["State"]),
                               "error": why})
                updates.append(UpdateState(ts=time.time(), state="rollback_started", message=f"{new.name}: {why}"))
                if handle["action"] == "rollback":
                    self.engine.call(f"stop {new.name}", new.stop, timeout=int(spec.stop_grace or 10))
                else:
                    self.engine.call(f"remove {new.name}", new.remove, force=True)
                    seen.pop(new.id, None)
                    events.append(RolloutEvent(ts=time.time(), service=spec.name, task=new.id,
                                               slot=int(new.labels.get(GEN, "0")), node=host,
                                               image=new.labels.get("org.nbops.image", ""), state="remove",
                                               health=health, message="removed: rollback"))
                for c in old:
                    self._reload(c)
                    if c.status != "running":
                        self.engine.call(f"start {c.name}", c.start)
                        self._reload(c)
                    row(c, time.time(), "kept: rollback")
                updates.append(UpdateState(ts=time.time(), state="rollback_completed",
                                           message=f"{', '.join(c.name for c in old) or 'nothing'} serving"))
                outcome = "rolled_back" if old and handle["action"] != "rollback" else "failed"
        finally:
            stream.close()
        live = [new] if outcome in ("healthy",) or (handle["action"] == "rollback" and outcome == "rolled_back") else old
        tasks = [self._task_row(c, host) for c in live]
        return Rollout(outcome=outcome, events=sorted(events, key=lambda e: e.ts), tasks=tasks, updates=updates,
                       failed_tasks=failed, image=tasks[0]["image"] if tasks else spec.image,
                       previous_image=old[0].labels.get("org.nbops.image") if old else None)

    def _reload(self, c: Any) -> None:
        self.engine.call(f"inspect {c.name}", c.reload)

    def _prune(self, name: str, keep: set[str]) -> None:
        """Keep the current and the previous generation; remove older stopped ones."""
        for c in self._containers(name, running=False):
            if c.id not in keep and c.status not in ("running", "restarting"):
                self.engine.call(f"remove {c.name}", c.remove, force=True)

    def _address(self) -> str:
        from . import lab_state_for

        st = lab_state_for(self.engine.address)
        for n in (st.nodes if st else []):
            if n.socket == self.engine.address:
                return n.ip
        return "127.0.0.1"

    def _endpoints_of(self, containers: list[Any]) -> list[tuple[str, int]]:
        addr = self._address()
        out = []
        for c in containers:
            st = c.attrs["State"]
            if st.get("Status") != "running" or (st.get("Health") or {}).get("Status") not in (None, "healthy"):
                continue
            for binds in (c.attrs["NetworkSettings"].get("Ports") or {}).values():
                for b in binds or []:
                    if b.get("HostIp") in ("0.0.0.0", "", None):
                        out.append((addr, int(b["HostPort"])))
        return sorted(set(out))

    def endpoints(self, spec: DeploySpec) -> list[tuple[str, int]]:
        return self._endpoints_of(self._containers(spec.name, running=True))

    def _task_row(self, c: Any, host: str | None) -> dict[str, Any]:
        st = c.attrs["State"]
        ports = sorted({int(b["HostPort"]) for binds in (c.attrs["NetworkSettings"].get("Ports") or {}).values()
                        for b in binds or [] if b.get("HostIp") in ("0.0.0.0", "", None)})
        return {"task": c.id, "slot": int(c.labels.get(GEN, "0")), "node": host, "address": self._address(),
                "image": c.labels.get("org.nbops.image", ""), "state": _state(st), "desired": "running",
                "health": (st.get("Health") or {}).get("Status"), "ports": ports, "message": c.name,
                "restart_policy": c.attrs["HostConfig"]["RestartPolicy"]["Name"]}


def _state(state: dict[str, Any]) -> str:
    status = state.get("Status", "")
    health = (state.get("Health") or {}).get("Status")
    if status == "running" and health == "starting":
        return "starting"
    return {"exited": "shutdown" if state.get("ExitCode", 0) in (0, 137, 143) else "failed"}.get(status, status)


def _last_health_log(c: Any) -> str:
    logs = (c.attrs["State"].get("Health") or {}).get("Log") or []
    if not logs:
        return ""
    last = logs[-1]
    return f"unhealthy: check exit {last.get('ExitCode')} {str(last.get('Output', '')).strip()[:80]}".strip()


def remove(name: str, *, engine=None) -> None:
    """Remove every container of an engine-orchestrated service."""
    from ..engine import Engine

    engine = engine or Engine.connect()
    for c in engine.client.containers.list(all=True, filters={"label": f"{LABEL}={name}"}):
        c.remove(force=True)

"""The Swarm backend: a service per deployment, tasks watched until every replica is healthy.

A task whose image has a HEALTHCHECK stays in ``starting`` until the check passes, then ``running``;
a task that turns unhealthy fails and is replaced. So the task states carry the health.
Ports publish in ``mode=host`` (no IPVS on these machines, so no ingress routing mesh).
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ConfigError, DeployError, NotFound
from . import DeploySpec, Orchestrator, RolloutEvent, register

POLL = 0.25


@register
class Swarm(Orchestrator):
    name = "swarm"

    def validate(self, spec: DeploySpec) -> list[str]:
        warnings = super().validate(spec)
        info = self.engine.info
        if info.get("Swarm", {}).get("LocalNodeState") != "active":
            raise ConfigError(f"the engine at {self.engine.address} is not in a swarm",
                              hint="use the lab (`nbops lab up`) or `docker swarm init`, or --orchestrator engine")
        if not info.get("Swarm", {}).get("ControlAvailable"):
            raise ConfigError("this engine is a swarm worker; deploy through a manager", hint="point DOCKER_HOST at a manager")
        return warnings

    def resolve_image(self, image: str) -> str:
        """Prefer a registry digest of the image (every node can pull it, and it cannot move)."""
        from ..distribute import _registry_of, lab_registry

        if "@" in image:
            return image
        try:
            img = self.engine.client.images.get(image)
        except Exception:
            return image
        digests = img.attrs.get("RepoDigests") or []
        if _registry_of(image):
            repo = image.rsplit(":", 1)[0]
            match = [d for d in digests if d.startswith(repo + "@")]
            return match[0] if match else image
        preferred = lab_registry()
        for d in digests:
            if preferred and d.startswith(preferred + "/"):
                return d
        return digests[0] if digests else image

    def apply(self, spec: DeploySpec) -> Any:
        from docker.types import EndpointSpec, ServiceMode

        image = self.resolve_image(spec.image)
        endpoint = None
        if spec.publish:
            # docker-py keys ports by published port, which a dynamic host port does not have
            endpoint = EndpointSpec(mode="vip", ports={})
            endpoint["Ports"] = [
                {"Protocol": p.protocol, "TargetPort": p.target, "PublishMode": "host",
                 **({"PublishedPort": p.published} if p.published is not None else {})}
                for p in spec.publish
            ]
        env = [f"{k}={v}" for k, v in spec.env.items()]
        client = self.engine.client
        existing = self._find(spec.name)
        if existing is None:
            service = self.engine.call(f"create service {spec.name}", client.services.create, image, name=spec.name,
                                       mode=ServiceMode("replicated", replicas=spec.replicas), endpoint_spec=endpoint,
                                       env=env or None, labels={"org.nbops.deploy": "1"})
            version_before = None
        else:
            version_before = existing.version
            self.engine.call(f"update service {spec.name}", existing.update, image=image,
                             mode=ServiceMode("replicated", replicas=spec.replicas), endpoint_spec=endpoint,
                             env=env or None)
            service = existing
        spec.image = image
        return {"service_id": service.id, "version_before": version_before, "image": image}

    def _find(self, name: str):
        try:
            return self.engine.client.services.get(name)
        except Exception as exc:
            if type(exc).__name__ == "NotFound" or isinstance(exc, NotFound):
                return None
            from ..engine import translate

            raise translate(exc, self.engine.address, f"look up service {name}") from exc

    def watch(self, spec: DeploySpec, handle: Any, deadline: float):
        api = self.engine.api
        sid = handle["service_id"]
        events: list[RolloutEvent] = []
        seen: dict[str, tuple] = {}
        nodes = self._nodes()
        has_health = self._has_healthcheck(spec.image)
        outcome = "timeout"
        tasks: list[dict[str, Any]] = []
        while True:
            now = time.time()
            raw = self.engine.call(f"list tasks of {spec.name}", api.tasks, filters={"service": sid})
            tasks = []
            for t in raw:
                status = t.get("Status", {})
                state = status.get("State", "")
                msg = status.get("Err") or status.get("Message") or ""
                node_id = t.get("NodeID")
                img = t.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")
                key = (state, msg, t.get("DesiredState"))
                if seen.get(t["ID"]) != key:
                    seen[t["ID"]] = key
                    events.append(RolloutEvent(ts=now, service=spec.name, task=t["ID"], slot=t.get("Slot"),
                                               node=nodes.get(node_id, {}).get("hostname", node_id), image=img,
                                               state=state, health=_health(state, msg, has_health), message=msg))
                ports = sorted({p.get("PublishedPort") for p in status.get("PortStatus", {}).get("Ports", []) or []})
                tasks.append({"task": t["ID"], "slot": t.get("Slot"), "node": nodes.get(node_id, {}).get("hostname"),
                              "address": nodes.get(node_id, {}).get("address"), "image": img, "state": state,
                              "desired": t.get("DesiredState"), "health": _health(state, msg, has_health),
                              "ports": ports, "message": msg})
            current = [t for t in tasks if t["desired"] == "running" and t["image"] == handle["image"]]
            healthy = [t for t in current if t["state"] == "running"]
            stale = [t for t in tasks if t["image"] != handle["image"] and t["state"] in ("running", "starting")]
            if len(healthy) >= spec.replicas and not stale:
                outcome = "healthy"
                break
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        live = [t for t in tasks if t["desired"] == "running"]
        return outcome, events, sorted(live, key=lambda t: t["slot"] or 0)

    def _nodes(self) -> dict[str, dict[str, str]]:
        nodes = self.engine.call("list swarm nodes", self.engine.api.nodes)
        return {n["ID"]: {"hostname": n["Description"]["Hostname"], "address": n["Status"].get("Addr")} for n in nodes}

    def _has_healthcheck(self, image: str) -> bool:
        try:
            img = self.engine.client.images.get(image)
        except Exception:
            return False
        return bool((img.attrs.get("Config") or {}).get("Healthcheck"))


def _health(state: str, message: str, has_health: bool) -> str | None:
    if not has_health:
        return None
    if "unhealthy" in message:
        return "unhealthy"
    if state == "running":
        return "healthy"
    if state == "starting":
        return "starting"
    return None


def remove(name: str, *, engine=None) -> None:
    """Remove a service (used by tests and runbooks to clean up)."""
    from ..engine import Engine

    engine = engine or Engine.connect()
    try:
        engine.client.services.get(name).remove()
    except Exception as exc:
        if type(exc).__name__ != "NotFound":
            raise DeployError(f"could not remove service {name}: {exc}") from exc

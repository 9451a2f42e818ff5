"""The Swarm backend: a service per deployment, its rollout watched through events and task states.

A task whose image has a HEALTHCHECK stays in ``starting`` until the check passes, then ``running``;
a task that turns unhealthy fails and is replaced. The service's ``UpdateStatus`` says whether an
update is running, completed, paused or being rolled back (``failure_action=rollback``).
Ports publish in ``mode=host`` (no IPVS on these machines, so no ingress routing mesh and no VIPs:
services on an overlay network use ``endpoint_mode=dnsrr`` unless told otherwise).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DeployError, EngineError, EngineTimeout, EngineUnreachable, NotFound
from ..health import Healthcheck, lint_update
from . import DeploySpec, Orchestrator, Rollout, RolloutEvent, UpdateState, register
from ._events import EventStream, event_ts, health_of

# The watch polls the service, its tasks and the nodes (swarm sends no task events): every POLL s
# while something changes, backing off to POLL_MAX while nothing does; an engine event (a container
# started, died, turned healthy; the service's update state) wakes it at once. Ten rollouts watched
# at a flat 0.25 s make 80-120 API calls a second (measured with service + tasks polled, 10x5
# services on the lab: watcher 2.5-4.5 s CPU, dockerd 3.8-6.1 s; with the back-off 1.7-2.0 s and
# 3.5-3.8 s; the docker CLI alone, dockerd 2.7-3.4 s). A lost manager is retried every POLL s.
POLL, POLL_MAX = 0.25, 2.0
TERMINAL_UPDATE = {"completed", "paused", "rollback_completed", "rollback_paused"}
FAILED_STATES = {"failed", "rejected"}


@register
class Swarm(Orchestrator):
    name = "swarm"
    needs = "an engine that is a swarm manager (the lab has one)"

    @classmethod
    def available(cls, engine) -> tuple[bool, str]:
        sw = engine.info.get("Swarm", {})
        if sw.get("LocalNodeState") != "active":
            return False, "the engine is not in a swarm"
        if not sw.get("ControlAvailable"):
            return False, "the engine is a swarm worker, not a manager"
        return True, ""

    # -- validate -------------------------------------------------------------------------------
    def validate(self, spec: DeploySpec) -> list[str]:
        warnings = super().validate(spec)
        ok, why = self.available(self.engine)
        if not ok:
            raise ConfigError(f"{why} ({self.engine.address})",
                              hint="use the lab (`nbops lab up`) or `docker swarm init`, or --orchestrator engine")
        if spec.action == "rollback":
            svc = self._find(spec.name)
            if svc is None:
                raise ConfigError(f"no service {spec.name!r} to roll back", hint="deploy it first")
            if not svc.attrs.get("PreviousSpec"):
                raise ConfigError(f"service {spec.name!r} has no previous spec to roll back to",
                                  hint="a rollback needs at least one update after the first deploy")
            return warnings
        nodes = self._nodes()
        eligible = [n for n in nodes.values() if n["ready"] and n["availability"] == "active"
                    and all(constraint_matches(c, n) for c in spec.constraints)]
        for c in spec.constraints:
            parse_constraint(c)
        if not eligible:
            raise ConfigError(f"no ready, active node satisfies {spec.constraints}",
                              hint="check node labels and availability (nbops.widgets.NodePicker shows them)")
        self._eligible = [n["id"] for n in eligible]
        if spec.image and self._local_only(spec.image) and not self._only_here():
            warnings.append(f"{spec.image} is in no registry: the other nodes cannot pull it (they try Docker Hub); "
                            "push it first (%push) so every node gets it")
        fixed = [p for p in spec.publish if p.published is not None]
        if fixed:
            per_node = 1
            wanted = len(eligible) if spec.mode == "global" else spec.replicas
            order = spec.update.effective()["order"]
            if wanted > len(eligible) * per_node:
                raise ConfigError(
                    f"{wanted} replicas cannot each bind host port {fixed[0].published} on {len(eligible)} node(s)",
                    hint="publish only the target port (e.g. --publish 8080) for a free host port per task")
            if order == "start-first" and (spec.mode == "global" or wanted >= len(eligible)):
                raise ConfigError(
                    f"update order start-first with the fixed host port {fixed[0].published} cannot place the new "
                    f"task beside the old one: the update would wait forever",
                    hint="use order=stop-first, or publish only the target port (a free host port per task)")
        if spec.networks and (spec.endpoint_mode or "dnsrr") == "vip":
            warnings.append("endpoint_mode=vip: service virtual IPs need IPVS, which this machine lacks — "
                            "connections to the VIP time out; dnsrr works")
        health = Healthcheck.from_api(self._image_healthcheck(spec.image), spec.health.to_api() if spec.health else None)
        eff = spec.update.effective()
        warnings += lint_update(eff["monitor"], health, eff["failure_action"])
        if eff["failure_action"] == "rollback" and health is None:
            warnings.append("failure_action=rollback without a HEALTHCHECK: only tasks that exit count as failures")
        if spec.compose:
            raise ConfigError("a compose file deploys through --orchestrator stack")
        return warnings

    # -- apply ----------------------------------------------------------------------------------
    def apply(self, spec: DeploySpec) -> Any:
        api = self.engine.api
        existing = self._find(spec.name)
        if spec.action == "rollback":
            return self._rollback(spec, existing)
        image = self.resolve_image(spec.image or "", pin_local=self._only_here())
        task_template = self.task_template(spec, image)
        mode = ({"Replicated": {"Replicas": spec.replicas}} if spec.mode == "replicated" else {"Global": {}})
        endpoint = self.endpoint_spec(spec)
        labels = {"org.nbops.deploy": "1", **spec.labels}
        if image != spec.image:
            labels["org.nbops.image"] = spec.image or ""  # the name asked for, beside the pinned reference
        common = dict(task_template=task_template, name=spec.name, labels=labels, mode=mode,
                      update_config=spec.update.to_api(), rollback_config=spec.rollback.to_api(),
                      endpoint_spec=endpoint)
        if existing is None:
            out = self.engine.call(f"create service {spec.name}", api.create_service, **common)
            sid, before = out["ID"], None
        else:
            sid, before = existing.id, existing.attrs.get("UpdateStatus")
            self.engine.call(f"update service {spec.name}", api.update_service, existing.id,
                             existing.version, **common)
        spec.image = image
        return {"service_id": sid, "before": before, "action": "create" if existing is None else "update"}

    def _rollback(self, spec: DeploySpec, svc: Any) -> dict[str, Any]:
        # docker-py has no `rollback` flag (update_service lacks it): the Engine API takes
        # POST /services/{id}/update?version=V&rollback=previous with the current spec as body,
        # exactly what `docker service rollback` sends.
        api = self.engine.api
        before = svc.attrs.get("UpdateStatus")
        url = api._url("/services/{0}/update", svc.id)
        resp = self.engine.call(f"roll back service {spec.name}", api._post_json, url, data=svc.attrs["Spec"],
                                params={"version": svc.version, "rollback": "previous"})
        self.engine.call(f"roll back service {spec.name}", api._raise_for_status, resp)
        spec.image = svc.attrs["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        return {"service_id": svc.id, "before": before, "action": "rollback"}

    def task_template(self, spec: DeploySpec, image: str) -> dict[str, Any]:
        container: dict[str, Any] = {"Image": image}
        if spec.command:
            container["Command"] = list(spec.command)
        if spec.env:
            container["Env"] = [f"{k}={v}" for k, v in spec.env.items()]
        if spec.init:
            container["Init"] = True
        if spec.stop_grace is not None:
            container["StopGracePeriod"] = int(spec.stop_grace * 1e9)
        if spec.health:
            container["Healthcheck"] = spec.health.to_api()
        if spec.mounts:
            container["Mounts"] = [parse_mount(m) for m in spec.mounts]
        if spec.secrets:
            container["Secrets"] = [self._secret_ref(s) for s in spec.secrets]
        if spec.configs:
            container["Configs"] = [self._config_ref(c) for c in spec.configs]
        template: dict[str, Any] = {"ContainerSpec": container, "ForceUpdate": 0}
        resources: dict[str, Any] = {}
        limits = {k: v for k, v in (("NanoCPUs", _nano(spec.cpus)), ("MemoryBytes", spec.memory)) if v}
        reserve = {k: v for k, v in (("NanoCPUs", _nano(spec.reserve_cpus)), ("MemoryBytes", spec.reserve_memory)) if v}
        if limits:
            resources["Limits"] = limits
        if reserve:
            resources["Reservations"] = reserve
        if resources:
            template["Resources"] = resources
        if spec.restart or spec.restart_delay is not None:
            cond, _, attempts = (spec.restart or "any").partition(":")
            if cond not in ("none", "on-failure", "any"):
                raise ConfigError(f"bad swarm restart condition {cond!r}", hint="use none, on-failure[:N] or any")
            template["RestartPolicy"] = {"Condition": cond, "MaxAttempts": int(attempts or 0),
                                         **({"Delay": int(spec.restart_delay * 1e9)} if spec.restart_delay is not None else {})}
        placement: dict[str, Any] = {}
        if spec.constraints:
            placement["Constraints"] = list(spec.constraints)
        if spec.preferences:
            placement["Preferences"] = [{"Spread": {"SpreadDescriptor": p.split("=", 1)[-1]}} for p in spec.preferences]
        if spec.max_per_node:
            placement["MaxReplicas"] = spec.max_per_node
        if placement:
            template["Placement"] = placement
        if spec.networks:
            template["Networks"] = [{"Target": self._network(n)} for n in spec.networks]
        return template

    def endpoint_spec(self, spec: DeploySpec) -> dict[str, Any] | None:
        mode = spec.endpoint_mode or ("dnsrr" if spec.networks else "vip")
        if mode not in ("vip", "dnsrr"):
            raise ConfigError(f"bad endpoint mode {mode!r}", hint="use vip or dnsrr")
        ports = [{"Protocol": p.protocol, "TargetPort": p.target, "PublishMode": "host",
                  **({"PublishedPort": p.published} if p.published is not None else {})} for p in spec.publish]
        return {"Mode": mode, "Ports": ports}

    def _secret_ref(self, text: str) -> dict[str, Any]:
        """``NAME`` (existing secret) or ``NAME=FILE`` (created from FILE when missing); mounted at /run/secrets/NAME."""
        name, _, src = text.partition("=")
        sid = self._find_or_create("secret", name, src, f"--secret {name}=./{name}.txt")
        return {"SecretID": sid, "SecretName": name,
                "File": {"Name": name, "UID": "0", "GID": "0", "Mode": 0o444}}

    def _config_ref(self, text: str) -> dict[str, Any]:
        """``NAME[=FILE][:TARGET]``; mounted at TARGET (default /NAME)."""
        head, _, target = text.partition(":")
        name, _, src = head.partition("=")
        cid = self._find_or_create("config", name, src, f"--config {name}=./{name}.conf")
        return {"ConfigID": cid, "ConfigName": name,
                "File": {"Name": target or f"/{name}", "UID": "0", "GID": "0", "Mode": 0o444}}

    def _find_or_create(self, kind: str, name: str, src: str, example: str) -> str:
        """The id of the swarm ``kind`` (secret or config) called ``name``, created from the file ``src``
        when there is none yet."""
        objects = getattr(self.engine.client, f"{kind}s")
        found = [o for o in self.engine.call(f"list {kind}s", objects.list, filters={"name": name}) if o.name == name]
        if found:
            return found[0].id
        if not src:
            raise ConfigError(f"no {kind} {name!r}", hint=f"create it with NAME=FILE: {example}")
        return self.engine.call(f"create {kind} {name}", objects.create, name=name, data=_read_file(src, kind),
                                labels={"org.nbops.deploy": "1"}).id

    def _network(self, name: str) -> str:
        """An existing network, or a new attachable overlay network of that name."""
        client = self.engine.client
        found = [n for n in self.engine.call("list networks", client.networks.list, names=[name]) if n.name == name]
        if found:
            return found[0].id
        net = self.engine.call(f"create overlay network {name}", client.networks.create, name, driver="overlay",
                               attachable=True, scope="swarm", labels={"org.nbops.deploy": "1"})
        return net.id

    def resolve_image(self, image: str, *, pin_local: bool = False) -> str:
        """Prefer a registry digest of the image (every node can pull it, and it cannot move).

        An image in no registry is referred to by its id when ``pin_local`` (every node that may run
        the task is this engine): swarm pulls every tag before it starts a task, even one present
        locally, and for a local-only tag that pull goes to Docker Hub. Without access to it (an
        offline machine, the lab) each pull waits out DNS and connect timeouts — measured here: 17 of
        50 tasks running after 180 s. An id is never pulled.
        """
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
        if digests:
            return digests[0]
        return img.id if pin_local else image

    def _local_only(self, image: str) -> bool:
        """Is ``image`` on this engine but in no registry (no repo digest)?"""
        if "@" in image or image.startswith("sha256:"):
            return False
        try:
            return not self.engine.client.images.get(image).attrs.get("RepoDigests")
        except Exception:
            return False

    def _only_here(self) -> bool:
        """Can tasks land only on this engine's node (one eligible node, and it is this one)?"""
        here = (self.engine.info.get("Swarm") or {}).get("NodeID")
        eligible = getattr(self, "_eligible", None)
        if eligible is None:
            eligible = [n["id"] for n in self._nodes().values() if n["ready"] and n["availability"] == "active"]
        return bool(here) and eligible == [here]

    def _find(self, name: str):
        try:
            return self.engine.client.services.get(name)
        except Exception as exc:
            if type(exc).__name__ == "NotFound" or isinstance(exc, NotFound):
                return None
            from ..engine import translate

            raise translate(exc, self.engine.address, f"look up service {name}") from exc

    # -- watch ----------------------------------------------------------------------------------
    def watch(self, spec: DeploySpec, handle: Any, deadline: float) -> Rollout:
        sid = handle["service_id"]
        until = time.time() + max(deadline - time.monotonic(), 0) + 1
        stream = EventStream(self.engine, since=handle.get("since", time.time() - 1), until=until,
                             keep=lambda ev: _belongs(ev, sid)).start()
        try:
            return self._watch(spec, handle, deadline, stream)
        finally:
            stream.close()

    def _watch(self, spec: DeploySpec, handle: Any, deadline: float, stream: EventStream) -> Rollout:
        api = self.engine.api
        sid = handle["service_id"]
        before_started = (handle.get("before") or {}).get("StartedAt")
        events: list[RolloutEvent] = []
        updates: list[UpdateState] = []
        failed: dict[str, dict[str, Any]] = {}
        seen: dict[str, tuple] = {}
        health_seen: dict[str, str] = {}
        task_state: dict[str, dict[str, Any]] = {}
        nodes = self._nodes()
        outcome = "timeout"
        tasks: list[dict[str, Any]] = []
        last_update: tuple | None = None
        expect_update = handle["action"] in ("update", "rollback")
        svc: dict[str, Any] = {}
        faults = _Faults(_local_hostname(self.engine) or self.engine.address, nodes)
        t_apply = time.monotonic()
        interval = POLL
        while True:
            now = time.time()
            n_before = len(events) + len(updates) + len(faults.incidents)
            try:
                # the manager may restart or vanish mid-rollout: note it and keep watching until the deadline
                svc = self.engine.call(f"inspect service {spec.name}", api.inspect_service, sid)
                raw = self.engine.call(f"list tasks of {spec.name}", api.tasks, filters={"service": sid})
                nodes = self._nodes()
            except EngineError as exc:
                if not _manager_gone(exc):
                    raise
                faults.manager_lost(now, exc)
                if time.monotonic() > deadline:
                    outcome = "manager_lost"
                    break
                time.sleep(POLL)
                continue
            faults.manager_answers(now)
            faults.nodes(now, nodes, raw)
            us = svc.get("UpdateStatus") or {}
            fresh = bool(us) and us.get("StartedAt") != before_started
            if handle["action"] == "update" and not fresh and time.monotonic() - t_apply > 2:
                # an update that changes no task (e.g. only replicas) starts no rolling update
                prev = (svc.get("PreviousSpec") or {}).get("TaskTemplate")
                cur = svc["Spec"].get("TaskTemplate")
                expect_update = prev is not None and _strip(prev) != _strip(cur)
            if fresh and (us.get("State"), us.get("Message")) != last_update:
                last_update = (us.get("State"), us.get("Message"))
                _note_update(updates, now, us.get("State", ""), us.get("Message", ""))
            current_image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            has_health = self._has_healthcheck(svc)
            tasks = []
            for t in raw:
                status = t.get("Status", {})
                state = status.get("State", "")
                msg = status.get("Err") or status.get("Message") or ""
                node = nodes.get(t.get("NodeID") or "", {})
                img = t.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")
                health = _health(state, msg, has_health, health_seen.get(t["ID"]))
                key = (state, msg, t.get("DesiredState"))
                if seen.get(t["ID"]) != key:
                    seen[t["ID"]] = key
                    desired = t.get("DesiredState")
                    note = msg if desired == "running" or not desired else f"{msg} (desired: {desired})"
                    events.append(RolloutEvent(ts=now, service=spec.name, task=t["ID"], slot=t.get("Slot"),
                                               node=node.get("hostname", t.get("NodeID")), image=img,
                                               state=state, health=health, message=note))
                if state in FAILED_STATES and t["ID"] not in failed:
                    failed[t["ID"]] = {"ts": _ts(status.get("Timestamp"), now), "task": t["ID"], "slot": t.get("Slot"),
                                       "node": node.get("hostname"), "image": img, "state": state,
                                       "error": status.get("Err") or msg}
                ports = sorted({p.get("PublishedPort") for p in status.get("PortStatus", {}).get("Ports", []) or []})
                row = {"task": t["ID"], "slot": t.get("Slot"), "node": node.get("hostname"),
                       "address": node.get("address"), "image": img, "state": state,
                       "desired": t.get("DesiredState"), "health": health, "ports": ports, "message": msg}
                task_state[t["ID"]] = row
                tasks.append(row)
            for ev in stream.drain():
                self._event_row(ev, spec, events, updates, task_state, health_seen, nodes)
            self.live_endpoints = [(t["address"], p) for t in tasks
                                   if t["state"] == "running" and t["desired"] == "running" and t["address"]
                                   for p in t["ports"]]
            # a task the manager still calls running on a node it has lost is not a running replica
            converged = self._converged(spec, svc, tasks, current_image, faults.down_hosts(nodes))
            state = us.get("State") if fresh else None
            if state in ("paused", "rollback_paused"):
                outcome = state
                break
            if expect_update:
                if state == "completed" and converged:
                    outcome = "healthy"
                    break
                if state == "rollback_completed" and converged:
                    outcome = "rolled_back"
                    break
            elif converged and time.monotonic() - t_apply > 0.3:
                outcome = "healthy"
                break
            if handle["action"] == "create" and len(failed) >= 3 * max(spec.replicas, 1) + 3:
                outcome = "failing"
                break
            if time.monotonic() > deadline:
                break
            changed = len(events) + len(updates) + len(faults.incidents) > n_before
            interval = POLL if changed else min(interval * 1.5, POLL_MAX)
            stream.wait(max(0.0, min(interval, deadline - time.monotonic())))
        for ev in stream.drain():
            self._event_row(ev, spec, events, updates, task_state, health_seen, nodes)
        previous = ((svc.get("PreviousSpec") or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Image")
        live = [t for t in tasks if t["desired"] == "running"]
        image = svc.get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")
        replicas = (svc.get("Spec", {}).get("Mode", {}).get("Replicated") or {}).get("Replicas")
        final = {"as_of": faults.last_answer, "spec_version": (svc.get("Version") or {}).get("Index"), "image": image,
                 "update_state": (svc.get("UpdateStatus") or {}).get("State"), "replicas": replicas,
                 "running": sum(1 for t in live if t["state"] == "running"),
                 "nodes_down": sorted(faults.down_hosts(nodes))}
        return Rollout(outcome=outcome, events=sorted(events, key=lambda e: e.ts), tasks=sorted(live, key=lambda t: t["slot"] or 0),
                       updates=sorted(updates, key=lambda u: u.ts), failed_tasks=sorted(failed.values(), key=lambda f: f["ts"]),
                       image=image, previous_image=previous, incidents=faults.report(live), final=final)

    def _event_row(self, ev, spec, events, updates, task_state, health_seen, nodes) -> None:
        attrs = ev.get("Actor", {}).get("Attributes", {})
        ts = event_ts(ev)
        if ev.get("Type") == "service":
            if attrs.get("updatestate.new"):
                _note_update(updates, ts, attrs["updatestate.new"], "")
            return
        action = ev.get("Action", "")
        tid = attrs.get("com.docker.swarm.task.id", "")
        health = health_of(action)
        known = task_state.get(tid, {})
        if health:
            health_seen[tid] = health
        elif action not in ("die", "kill", "oom", "start"):
            return
        if action in ("die", "kill") and known:
            # the task's container is going away: stop sending probe requests to it now
            self.live_endpoints = [e for e in self.live_endpoints if e[1] not in known.get("ports", [])]
        msg = action if action != "die" else f"die exitCode={attrs.get('exitCode')}"
        events.append(RolloutEvent(ts=ts, service=spec.name, task=tid, slot=known.get("slot"),
                                   node=known.get("node") or _local_hostname(self.engine),
                                   image=known.get("image", attrs.get("image", "")),
                                   state=known.get("state", "running" if action == "start" else ""),
                                   health=health or known.get("health"), message=f"event: {msg}"))

    def _converged(self, spec: DeploySpec, svc: dict, tasks: list[dict], image: str,
                   down_hosts: set[str] | frozenset[str] = frozenset()) -> bool:
        wanted = [t for t in tasks if t["desired"] == "running"]
        if any(t["node"] in down_hosts for t in wanted):
            return False
        if any(t["image"] != image for t in tasks if t["state"] in ("running", "starting") and t["desired"] == "running"):
            return False
        if any(t["state"] != "running" for t in wanted):
            return False
        replicas = (svc["Spec"].get("Mode", {}).get("Replicated") or {}).get("Replicas")
        if replicas is not None:
            return len(wanted) == replicas
        return len(wanted) >= 1

    def endpoints(self, spec: DeploySpec) -> list[tuple[str, int]]:
        svc = self._find(spec.name)
        if svc is None:
            return []
        nodes = self._nodes()
        out = []
        for t in self.engine.call("list tasks", self.engine.api.tasks, filters={"service": svc.id, "desired-state": "running"}):
            status = t.get("Status", {})
            addr = nodes.get(t.get("NodeID") or "", {}).get("address")
            if status.get("State") == "running" and addr:
                out += [(addr, p["PublishedPort"]) for p in (status.get("PortStatus") or {}).get("Ports", []) or []]
        return out

    def _nodes(self) -> dict[str, dict[str, Any]]:
        return swarm_nodes(self.engine)

    def _has_healthcheck(self, svc: dict) -> bool:
        over = svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Healthcheck")
        return Healthcheck.from_api(self._image_healthcheck(svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]),
                                    over) is not None

    def _image_healthcheck(self, image: str | None) -> dict[str, Any] | None:
        if not image:
            return None
        cache = self.__dict__.setdefault("_hc_cache", {})
        if image not in cache:
            try:
                img = self.engine.client.images.get(image)
                cache[image] = (img.attrs.get("Config") or {}).get("Healthcheck")
            except Exception:
                cache[image] = None
        return cache[image]


# -- helpers -------------------------------------------------------------------------------------

def swarm_nodes(engine) -> dict[str, dict[str, Any]]:
    """Node id → hostname, address, role, availability, state, labels, engine version, resources."""
    out = {}
    for n in engine.call("list swarm nodes", engine.api.nodes):
        desc, spec, status = n.get("Description", {}), n.get("Spec", {}), n.get("Status", {})
        res = desc.get("Resources", {})
        out[n["ID"]] = {"id": n["ID"], "hostname": desc.get("Hostname"), "address": status.get("Addr"),
                        "role": spec.get("Role"), "availability": spec.get("Availability"),
                        "ready": status.get("State") == "ready", "state": status.get("State"),
                        "labels": dict(spec.get("Labels") or {}),
                        "engine_labels": dict((desc.get("Engine") or {}).get("Labels") or {}),
                        "engine": (desc.get("Engine") or {}).get("EngineVersion"),
                        "cpus": (res.get("NanoCPUs") or 0) / 1e9, "memory": res.get("MemoryBytes"),
                        "leader": bool((n.get("ManagerStatus") or {}).get("Leader"))}
    return out


def parse_constraint(text: str) -> tuple[str, str, str]:
    for op in ("==", "!="):
        if op in text:
            key, value = (s.strip() for s in text.split(op, 1))
            if key and value:
                return key, op, value
    raise ConfigError(f"bad placement constraint {text!r}",
                      hint="use node.hostname==NAME, node.role==manager, node.labels.KEY==VALUE (or !=)")


def constraint_matches(text: str, node: dict[str, Any]) -> bool:
    """Evaluate a swarm placement constraint against a node from :func:`swarm_nodes` (for lint and pickers)."""
    key, op, value = parse_constraint(text)
    if key == "node.hostname":
        actual = node.get("hostname")
    elif key == "node.id":
        actual = node.get("id")
    elif key == "node.role":
        actual = node.get("role")
    elif key.startswith("node.labels."):
        actual = node.get("labels", {}).get(key[len("node.labels."):])
    elif key.startswith("engine.labels."):
        actual = node.get("engine_labels", {}).get(key[len("engine.labels."):])
    else:
        return True  # node.platform.* etc.: the engine decides
    return (actual == value) if op == "==" else (actual != value)


def parse_mount(text: str) -> dict[str, Any]:
    """``SRC:DST[:ro]``: an absolute SRC is a bind mount, a name a volume; ``tmpfs:DST`` a tmpfs."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[1].startswith("/"):
        raise ConfigError(f"bad mount {text!r}", hint="use VOLUME:/path, /host/path:/path[:ro] or tmpfs:/path")
    src, dst = parts[0], parts[1]
    ro = len(parts) == 3 and parts[2] == "ro"
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        raise ConfigError(f"bad mount option {parts[2]!r} in {text!r}", hint="use ro or rw")
    if src == "tmpfs":
        return {"Type": "tmpfs", "Target": dst}
    kind = "bind" if src.startswith("/") else "volume"
    if kind == "bind" and not Path(src).exists():
        raise ConfigError(f"bind mount source {src} does not exist", hint="bind mounts need the path on every node")
    return {"Type": kind, "Source": src, "Target": dst, "ReadOnly": ro}


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def _nano(cpus: float | None) -> int | None:
    return int(cpus * 1e9) if cpus else None


def _strip(template: dict | None) -> dict:
    return {k: v for k, v in (template or {}).items() if k != "ForceUpdate"}


def _ts(text: str | None, default: float) -> float:
    if not text:
        return default
    import pandas as pd

    try:
        return pd.Timestamp(text).timestamp()
    except ValueError:
        return default


def _note_update(updates: list[UpdateState], ts: float, state: str, message: str) -> None:
    """One row per update state: the event's (earlier, exact) time, the inspect's message."""
    for u in updates:
        if u.state == state:
            u.ts = min(u.ts, ts)
            u.message = u.message or message
            return
    updates.append(UpdateState(ts=ts, state=state, message=message))


class _Faults:
    """What went wrong around a rollout while it was watched: the manager stopped answering (and came
    back), nodes went down (and came back), which slots lost their task and where it was rescheduled."""

    def __init__(self, manager: str, nodes: dict[str, dict[str, Any]]) -> None:
        self.manager = manager
        self.state = {nid: n["state"] for nid, n in nodes.items()}
        self.hostnames = {nid: n["hostname"] for nid, n in nodes.items()}
        self.slot_node: dict[int, str] = {}  # slot → hostname of its last task desired running
        self.incidents: list[dict[str, Any]] = []
        self.lost_since: float | None = None
        self.last_answer: float | None = None

    def manager_lost(self, ts: float, exc: Exception) -> None:
        if self.lost_since is None:
            self.lost_since = ts
            reason = _short(exc.message)
            self.incidents.append({"ts": ts, "kind": "manager_lost", "node": self.manager, "reason": reason,
                                   "detail": f"the swarm manager became unavailable ({reason})", "slots": []})

    def manager_answers(self, ts: float) -> None:
        if self.lost_since is not None:
            self.incidents.append({"ts": ts, "kind": "manager_back", "node": self.manager,
                                   "detail": f"the swarm manager answered again after {ts - self.lost_since:.1f} s",
                                   "slots": []})
            self.lost_since = None
        self.last_answer = ts

    def nodes(self, ts: float, nodes: dict[str, dict[str, Any]], raw_tasks: list[dict[str, Any]]) -> None:
        for nid, n in nodes.items():
            self.hostnames[nid] = n["hostname"]
            old, new = self.state.get(nid), n["state"]
            self.state[nid] = new
            if old is None or old == new or (old != "ready" and new != "ready"):
                continue
            host = n["hostname"]
            if new == "ready":
                self.incidents.append({"ts": ts, "kind": "node_up", "node": host, "detail": f"{host} is ready again",
                                       "slots": []})
            else:
                slots = sorted(s for s, h in self.slot_node.items() if h == host)
                how = "went down" if new == "down" else f"is {new} to the manager"  # unknown: not heard from yet
                self.incidents.append({"ts": ts, "kind": "node_down", "node": host, "state": new, "slots": slots,
                                       "detail": f"{host} {how} with {len(slots)} task(s) of the service"})
        for t in raw_tasks:  # after the node check: a slot keeps the node it had before its node was lost
            if t.get("DesiredState") == "running" and t.get("Slot") is not None and t.get("NodeID") in self.hostnames:
                self.slot_node[t["Slot"]] = self.hostnames[t["NodeID"]]

    def down_hosts(self, nodes: dict[str, dict[str, Any]]) -> set[str]:
        return {n["hostname"] for n in nodes.values() if not n["ready"]}

    def report(self, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The incidents, each node_down one saying where its slots' tasks run now (``moved``)."""
        where = {t["slot"]: t["node"] for t in live if t["state"] == "running"}
        for inc in self.incidents:
            if inc["kind"] == "node_down":
                inc["moved"] = {str(s): where.get(s) for s in inc["slots"]}
                moved = [f"slot {s} → {where[s]}" for s in inc["slots"] if where.get(s) and where[s] != inc["node"]]
                if moved:  # a node merely unknown to a restarted manager may have lost its slots to the update
                    word = "rescheduled" if inc["state"] == "down" else "now"
                    inc["detail"] += f", {word}: {', '.join(moved)}"
        return self.incidents


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _manager_gone(exc: EngineError) -> bool:
    """The manager stopped, restarts, or has not yet rejoined its raft (no leader): worth waiting for."""
    if isinstance(exc, (EngineUnreachable, EngineTimeout)):
        return True
    text = exc.message.lower()
    # while the manager shuts down, its raft client answers with gRPC errors (seen: "rpc error: code =
    # Canceled desc = grpc: the client connection is closing", HTTP 500)
    grpc_closing = "rpc error" in text and any(w in text for w in ("code = canceled", "code = unavailable",
                                                                   "connection is closing", "transport is closing"))
    return (getattr(exc, "status", None) == 503 or "leader" in text or "not a swarm manager" in text
            or grpc_closing)


def _belongs(ev: dict[str, Any], sid: str) -> bool:
    actor = ev.get("Actor", {})
    if ev.get("Type") == "service":
        return actor.get("ID") == sid
    action = ev.get("Action", "")
    if action.startswith("exec_"):
        return False  # one per healthcheck probe: too many, and the health_status events carry the change
    return actor.get("Attributes", {}).get("com.docker.swarm.service.id") == sid


def _local_hostname(engine) -> str | None:
    return engine.info.get("Name")


def _health(state: str, message: str, has_health: bool, seen: str | None) -> str | None:
    if not has_health:
        return None
    if "unhealthy" in message:
        return "unhealthy"
    if state == "running":
        return "healthy"
    if state == "starting":
        return seen if seen == "unhealthy" else "starting"
    return seen if seen == "unhealthy" else None


def remove(name: str, *, engine=None) -> None:
    """Remove a service (used by tests and runbooks to clean up)."""
    from ..engine import Engine

    engine = engine or Engine.connect()
    try:
        engine.client.services.get(name).remove()
    except Exception as exc:
        if type(exc).__name__ != "NotFound":
            raise DeployError(f"could not remove service {name}: {exc}") from exc

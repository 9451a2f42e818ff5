"""Deploy: orchestrators behind one base class (validate → apply → watch → record).

Backends register in :data:`ORCHESTRATORS`; ``deploy(..., orchestrator="swarm")`` picks one.
A Kubernetes backend would subclass :class:`Orchestrator` the same way — fill in ``validate`` (lint),
``apply`` (create/patch a Deployment), ``watch`` (pod phases and readiness → :class:`RolloutEvent`
rows) and ``endpoints`` (for the probe). None ships: no cluster can be reached here to test it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from .. import history as _history
from .._display import card, esc, frame_html, human_time
from ..engine import Engine
from ..errors import ConfigError, RolloutFailed

# -- small parsers ------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int | None, what: str = "duration") -> float | None:
    """``2``, ``2s``, ``500ms``, ``1m`` → seconds (float). None stays None."""
    if value is None or isinstance(value, (int, float)):
        if value is not None and value < 0:
            raise ConfigError(f"{what} must be ≥ 0, not {value}")
        return None if value is None else float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"bad {what} {value!r}", hint="use seconds or a unit: 500ms, 2s, 1m")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_bytes(value: str | int | None, what: str = "size") -> int | None:
    """``64m``, ``1g``, ``512k``, ``1048576`` → bytes."""
    if value is None or isinstance(value, int):
        return value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", str(value).lower())
    if not m:
        raise ConfigError(f"bad {what} {value!r}", hint="use bytes or a unit: 64m, 1g")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def _kv_list(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"bad {what} part {part!r}", hint="use key=value,key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


@dataclass
class Port:
    target: int
    published: int | None = None
    protocol: str = "tcp"

    @classmethod
    def parse(cls, spec: str | int | Port) -> Port:
        """``8080`` (target 8080, a free host port per task) or ``80:8080`` or ``80:8080/udp``."""
        if isinstance(spec, Port):
            return spec
        text = str(spec).strip()
        proto = "tcp"
        if "/" in text:
            text, proto = text.split("/", 1)
        bad = ConfigError(f"bad port {spec!r}", hint="use TARGET or PUBLISHED:TARGET[/udp], e.g. 8080 or 80:8080, "
                          "ports 1-65535, protocol tcp, udp or sctp")
        pub, _, tgt = text.rpartition(":") if ":" in text else (None, "", text)
        numbers = [tgt] + ([pub] if pub is not None else [])
        # int() alone would accept "8_0", " 80", "-1" and non-ASCII digits
        if proto not in ("tcp", "udp", "sctp") or not all(n.isascii() and n.isdigit() for n in numbers):
            raise bad
        if not all(1 <= int(n) <= 65535 for n in numbers):
            raise bad
        return cls(target=int(tgt), published=int(pub) if pub is not None else None, protocol=proto)


@dataclass
class UpdatePolicy:
    """Swarm's update (or rollback) config; None fields keep the engine's defaults."""

    parallelism: int | None = None
    delay: float | None = None
    failure_action: str | None = None
    monitor: float | None = None
    max_failure_ratio: float | None = None
    order: str | None = None

    DEFAULTS: ClassVar[dict[str, Any]] = {"parallelism": 1, "delay": 0.0, "failure_action": "pause", "monitor": 5.0,
                                          "max_failure_ratio": 0.0, "order": "stop-first"}

    @classmethod
    def parse(cls, value: str | dict | UpdatePolicy | None, what: str = "update policy") -> UpdatePolicy:
        """``parallelism=1,delay=1s,failure_action=rollback,monitor=5s,max_failure_ratio=0.2,order=start-first``."""
        if value is None:
            return cls()
        if isinstance(value, UpdatePolicy):
            return value
        raw = dict(value) if isinstance(value, dict) else _kv_list(value, what)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {what} key(s): {', '.join(sorted(unknown))}",
                              hint="use parallelism, delay, failure_action, monitor, max_failure_ratio, order")
        pol = cls()
        try:
            if raw.get("parallelism") is not None:
                pol.parallelism = int(raw["parallelism"])
            if raw.get("max_failure_ratio") is not None:
                pol.max_failure_ratio = float(raw["max_failure_ratio"])
        except ValueError as exc:
            raise ConfigError(f"bad {what}: {exc}") from None
        pol.delay = parse_duration(raw.get("delay"), f"{what} delay")
        pol.monitor = parse_duration(raw.get("monitor"), f"{what} monitor")
        pol.failure_action = raw.get("failure_action")
        pol.order = raw.get("order")
        if pol.failure_action not in (None, "pause", "continue", "rollback"):
            raise ConfigError(f"bad {what} failure_action {pol.failure_action!r}", hint="use pause, continue or rollback")
        if pol.order not in (None, "start-first", "stop-first"):
            raise ConfigError(f"bad {what} order {pol.order!r}", hint="use start-first or stop-first")
        if pol.max_failure_ratio is not None and not 0 <= pol.max_failure_ratio <= 1:
            raise ConfigError(f"{what} max_failure_ratio must be within 0..1")
        if pol.parallelism is not None and pol.parallelism < 0:
            raise ConfigError(f"{what} parallelism must be ≥ 0 (0 = all at once)")
        return pol

    def effective(self) -> dict[str, Any]:
        return {k: (v if (v := getattr(self, k)) is not None else d) for k, d in self.DEFAULTS.items()}

    def to_api(self) -> dict[str, Any]:
        """The Engine API's UpdateConfig/RollbackConfig (durations in ns)."""
        eff = self.effective()
        return {"Parallelism": eff["parallelism"], "Delay": int(eff["delay"] * 1e9),
                "FailureAction": eff["failure_action"], "Monitor": int(eff["monitor"] * 1e9),
                "MaxFailureRatio": eff["max_failure_ratio"], "Order": eff["order"]}


@dataclass
class HealthSpec:
    """A HEALTHCHECK override (None fields: the image's values)."""

    cmd: str | None = None
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cmd is not None:
            out["Test"] = ["NONE"] if self.cmd.lower() == "none" else ["CMD-SHELL", self.cmd]
        for key, api in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
            if getattr(self, key) is not None:
                out[api] = int(getattr(self, key) * 1e9)
        if self.retries is not None:
            out["Retries"] = self.retries
        return out


@dataclass
class DeploySpec:
    """Everything a deployment asks for; each backend uses what it supports and rejects the rest."""

    image: str | None
    name: str
    replicas: int = 1
    publish: list[Port] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    action: str = "deploy"  # deploy | rollback
    mode: str = "replicated"  # replicated | global
    command: list[str] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)
    max_per_node: int | None = None
    update: UpdatePolicy = field(default_factory=UpdatePolicy)
    rollback: UpdatePolicy = field(default_factory=UpdatePolicy)
    networks: list[str] = field(default_factory=list)
    endpoint_mode: str | None = None
    mounts: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    cpus: float | None = None
    memory: int | None = None
    reserve_cpus: float | None = None
    reserve_memory: int | None = None
    restart: str | None = None  # none | on-failure[:N] | any (swarm) / no | on-failure[:N] | always | unless-stopped
    restart_delay: float | None = None
    health: HealthSpec | None = None
    init: bool = False
    stop_grace: float | None = None
    probe: bool = False
    probe_path: str = "/"
    probe_interval: float = 0.05
    compose: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        self.publish = [Port.parse(p) for p in self.publish]
        self.update = UpdatePolicy.parse(self.update, "update")
        self.rollback = UpdatePolicy.parse(self.rollback, "rollback")
        self.memory = parse_bytes(self.memory, "memory")
        self.reserve_memory = parse_bytes(self.reserve_memory, "memory reservation")
        self.stop_grace = parse_duration(self.stop_grace, "stop grace period")
        self.restart_delay = parse_duration(self.restart_delay, "restart delay")
        if isinstance(self.command, str):
            import shlex

            self.command = shlex.split(self.command)


@dataclass
class RolloutEvent:
    ts: float
    service: str
    task: str
    slot: int | None
    node: str | None
    image: str
    state: str
    health: str | None
    message: str


@dataclass
class UpdateState:
    """A change of the service's update status (updating, completed, paused, rollback_started…)."""

    ts: float
    state: str
    message: str = ""


@dataclass
class DeployResult:
    """What ``%deploy`` returns: the outcome, the final tasks and the rollout timeline (``to_frame()``).

    ``updates`` lists the service's update-status changes (when the update started, when a rollback
    started and finished), ``failed_tasks`` which tasks failed and why, ``probe`` the zero-downtime probe.
    """

    service: str
    image: str
    orchestrator: str
    outcome: str
    duration_s: float
    events: list[RolloutEvent]
    tasks: list[dict[str, Any]]
    deploy_id: int | None = None
    action: str = "deploy"
    started: float = 0.0
    updates: list[UpdateState] = field(default_factory=list)
    failed_tasks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    probe: Any = None
    previous_image: str | None = None
    incidents: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        running = sum(1 for t in self.tasks if t["state"] == "running")
        extra = f", {len(self.failed_tasks)} failed task(s)" if self.failed_tasks else ""
        extra += "".join(f"; {i['detail']}" for i in self.incidents)
        probe = f", probe {self.probe.summary()}" if self.probe is not None else ""
        return (f"<DeployResult {self.service} {self.outcome}: {running}/{len(self.tasks)} tasks running "
                f"({self.image}) in {human_time(self.duration_s)} via {self.orchestrator}{extra}{probe}>")

    @property
    def ok(self) -> bool:
        return self.outcome == ("rolled_back" if self.action == "rollback" else "healthy")

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(t["address"], p) for t in self.tasks if t["state"] == "running" for p in t["ports"]]

    @property
    def marks(self) -> dict[str, float]:
        """Moments for the timeline: apply, update, rollback, done."""
        out: dict[str, float] = {"apply": self.started} if self.started else {}
        names = {"updating": "update", "rollback_started": "rollback", "completed": "done",
                 "rollback_completed": "rolled back", "paused": "paused", "rollback_paused": "rollback paused"}
        for u in self.updates:
            label = names.get(u.state)
            if label and label not in out:
                out[label] = u.ts
        return out

    def story(self) -> list[str]:
        """What happened, when (seconds after apply), and which tasks failed why."""
        t0 = self.started or (self.events[0].ts if self.events else 0.0)
        lines = [(u.ts, f"service {u.state}" + (f": {u.message}" if u.message else "")) for u in self.updates]
        lines += [(f["ts"], f"task {f['task'][:12]} (slot {f['slot']}, {f['image']}) {f['state']}: {f['error']}")
                  for f in self.failed_tasks]
        lines += [(i["ts"], i["detail"]) for i in self.incidents]
        return [f"+{ts - t0:5.1f} s  {text}" for ts, text in sorted(lines, key=lambda x: x[0])]

    def to_frame(self):
        import pandas as pd

        df = pd.DataFrame([asdict(e) for e in sorted(self.events, key=lambda e: e.ts)],
                          columns=list(RolloutEvent.__dataclass_fields__))
        df.insert(1, "time", pd.to_datetime(df["ts"], unit="s", utc=True))
        return df

    def tasks_frame(self):
        import pandas as pd

        return pd.DataFrame(self.tasks)

    def failed_frame(self):
        import pandas as pd

        return pd.DataFrame(self.failed_tasks, columns=["ts", "task", "slot", "node", "image", "state", "error"])

    def _repr_html_(self) -> str:
        facts = {"service": self.service, "outcome": self.outcome, "image": self.image,
                 "time": human_time(self.duration_s), "via": self.orchestrator}
        if self.probe is not None:
            facts["probe"] = self.probe.summary()
        tasks = self.tasks_frame()
        story = "".join(f"<div><code>{esc(line)}</code></div>" for line in self.story())
        warn = "".join(f"<div style='color:#a50'>⚠ {esc(w)}</div>" for w in self.warnings)
        return card("deploy", facts, warn + story + (frame_html(tasks) if not tasks.empty else ""))

    def plot(self, ax: Any = None):
        from .. import plot

        return plot.rollout_timeline(self.to_frame(), ax=ax, marks=self.marks)


@dataclass
class Rollout:
    """What a backend's ``watch`` observed."""

    outcome: str
    events: list[RolloutEvent]
    tasks: list[dict[str, Any]]
    updates: list[UpdateState] = field(default_factory=list)
    failed_tasks: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None
    previous_image: str | None = None
    incidents: list[dict[str, Any]] = field(default_factory=list)  # manager lost/back, node down/up
    final: dict[str, Any] = field(default_factory=dict)  # the service as the manager last reported it


class Orchestrator:
    """Template: :meth:`run` validates, applies, watches and records; backends fill in the parts."""

    name: ClassVar[str] = "base"
    needs: ClassVar[str] = ""

    def __init__(self, engine: Engine, history: _history.History | None = None) -> None:
        self.engine = engine
        self.history = history or _history.default()
        self.live_endpoints: list[tuple[str, int]] = []

    @classmethod
    def available(cls, engine: Engine) -> tuple[bool, str]:
        """Can this backend run against ``engine``? (and why not)."""
        return True, ""

    def validate(self, spec: DeploySpec) -> list[str]:
        """Return warnings; raise ConfigError for what cannot work."""
        if spec.replicas < 0:
            raise ConfigError(f"replicas must be ≥ 0, not {spec.replicas}", hint="use --replicas N")
        if not spec.name or not spec.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"bad service name {spec.name!r}", hint="use letters, digits, - and _")
        if spec.action not in ("deploy", "rollback"):
            raise ConfigError(f"unknown deploy action {spec.action!r}")
        if spec.action == "deploy" and not spec.image and not spec.compose:
            raise ConfigError("no image to deploy", hint="%deploy IMAGE --name NAME (or --rollback NAME)")
        if spec.mode not in ("replicated", "global"):
            raise ConfigError(f"bad mode {spec.mode!r}", hint="use replicated or global")
        return lint_env(spec.env)

    def apply(self, spec: DeploySpec) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def watch(self, spec: DeploySpec, handle: Any, deadline: float) -> Rollout:
        raise NotImplementedError  # pragma: no cover - abstract

    def endpoints(self, spec: DeploySpec) -> list[tuple[str, int]]:
        """The service's live endpoints now (address, port) — what the probe sends requests to."""
        return []

    def run(self, spec: DeploySpec) -> DeployResult:
        from ..health import Probe

        t0 = time.monotonic()
        warnings = self.validate(spec)
        probe = None
        if spec.probe:
            self.live_endpoints = self.endpoints(spec)
            probe = Probe(lambda: self.live_endpoints, path=spec.probe_path, interval=spec.probe_interval,
                          deadline=time.time() + spec.timeout + 5)
            probe.start()
        started = time.time()
        try:
            handle = self.apply(spec)
            rollout = self.watch(spec, handle, deadline=t0 + spec.timeout)
        finally:
            if probe is not None:
                time.sleep(0.5)  # a short tail: what clients see right after the rollout
                probe.stop()
        duration = time.monotonic() - t0
        # the event stream starts a second early (whole seconds): drop what belongs to an earlier rollout
        rollout.events = [e for e in rollout.events if e.ts >= started - 0.05]
        result = DeployResult(service=spec.name, image=rollout.image or spec.image or "", orchestrator=self.name,
                              outcome=rollout.outcome, duration_s=duration, events=rollout.events,
                              tasks=rollout.tasks, action=spec.action, started=started, updates=rollout.updates,
                              failed_tasks=rollout.failed_tasks, warnings=warnings, probe=probe,
                              previous_image=rollout.previous_image, incidents=rollout.incidents,
                              final=rollout.final)
        meta = {"action": spec.action, "warnings": warnings, "updates": [asdict(u) for u in rollout.updates],
                "failed_tasks": rollout.failed_tasks, "previous_image": rollout.previous_image,
                "probe": probe.summary_dict() if probe is not None else None,
                "incidents": rollout.incidents, "final": rollout.final}
        result.deploy_id = self.history.record(
            "deploys",
            {"ts": started, "run_id": _history.current_run_id(), "service": spec.name, "image": result.image,
             "orchestrator": self.name, "outcome": rollout.outcome, "duration_s": duration,
             "replicas": spec.replicas, "error": None if result.ok else _last_error(rollout),
             "meta": json.dumps(meta, default=str)},
            {"rollout_events": [asdict(e) for e in rollout.events]},
        )
        if not result.ok:
            what = {"rolled_back": "was rolled back", "paused": "was paused", "timeout": "timed out",
                    "rollback_paused": "failed and its rollback paused", "failing": "keeps failing",
                    "manager_lost": "lost its swarm manager"}
            raise RolloutFailed(
                f"{spec.name} {what.get(rollout.outcome, rollout.outcome)} after {duration:.1f} s: "
                f"{_last_error(rollout) or rollout.outcome}"
                + "".join(f"; {i['detail']}" for i in rollout.incidents
                          if not (rollout.outcome == i["kind"] == "manager_lost")),
                hint=(f"check the manager (nbops lab status, or nbops doctor), then `docker service ps {spec.name}`; "
                      "the timeline is in .result.to_frame() on this error" if rollout.outcome == "manager_lost" else
                      "the timeline is in .result.to_frame() on this error (%nbops error shows it)"),
                result=result, outcome=rollout.outcome)
        return result


_STATE_NOTE = {"preparing": " (pulling the image, creating the container)", "pending": " (not scheduled yet)"}


def _where_tasks_stand(rollout: Rollout) -> str:
    """``2/5 tasks running, 3 preparing (…)``: what a rollout that timed out was still waiting for."""
    counts: dict[str, int] = {}
    for t in rollout.tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    running = counts.pop("running", 0)
    rest = ", ".join(f"{n} {state}{_STATE_NOTE.get(state, '')}" for state, n in sorted(counts.items()))
    return f"{running}/{len(rollout.tasks)} tasks running" + (f", {rest}" if rest else "")


_SECRET_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL", re.IGNORECASE)


def lint_env(env: dict[str, str] | None) -> list[str]:
    """A warning per environment variable whose NAME looks like a secret (the value is never repeated).

    Docker keeps ``-e`` values where anyone with the engine's API can read them: the service spec
    (``docker service inspect``, stored in the managers' raft store under the engine's data directory)
    and each task container's config (``docker inspect``; plain text in ``config.v2.json``).
    """
    out = []
    for name in sorted(env or {}):
        if _SECRET_ENV.search(name):
            lower = re.sub(r"[^a-z0-9_.-]", "_", name.lower())
            out.append(f"env {name} looks like a secret: Docker keeps environment values readable — in the "
                       f"service spec in the managers' raft store (the engine's data directory, <data-root>/swarm), "
                       f"in plain text in each task container's config on disk, and in `docker service inspect` / "
                       f"`docker inspect` for anyone with the engine's API — use a swarm secret instead: "
                       f"--secret {lower}=./{lower}.txt, read from /run/secrets/{lower} "
                       f"(or a *_FILE variable pointing there)")
    return out


def _last_error(rollout: Rollout) -> str | None:
    if rollout.outcome == "manager_lost":
        lost = [i for i in rollout.incidents if i["kind"] == "manager_lost"][-1:]
        f = rollout.final
        seen = (f"last seen: update {f.get('update_state') or 'none'}, {f.get('running')}/{f.get('replicas')} "
                f"task(s) running {f.get('image')}") if f.get("as_of") else "the service was never seen"
        since = time.strftime("%H:%M:%S", time.gmtime(lost[0]["ts"])) if lost else "?"
        why = lost[0].get("reason", "") if lost else ""
        return (f"the swarm manager {lost[0]['node'] if lost else ''} became unavailable at {since} UTC ({why}) and "
                f"did not come back before the timeout; the update may still run there ({seen})")
    if rollout.outcome == "timeout" and rollout.tasks:
        failed = rollout.failed_tasks[-1] if rollout.failed_tasks else None
        last = f"; last failure: task {failed['task'][:12]} {failed['state']}: {failed['error']}" if failed else ""
        return _where_tasks_stand(rollout) + last
    if rollout.failed_tasks:
        f = rollout.failed_tasks[-1]
        return f"task {f['task'][:12]} {f['state']}: {f['error']}"
    for u in reversed(rollout.updates):
        if u.message and u.state in ("paused", "rollback_started", "rollback_paused", "rollback_completed"):
            return u.message
    for e in reversed(rollout.events):
        if e.message and e.state in ("failed", "rejected", "shutdown", "orphaned", "pending"):
            return f"task {e.task[:12]} {e.state}: {e.message}"
    return None


def lab_state_for(address: str) -> Any:
    """The lab whose node answers at ``address`` (``unix://<lab>/n<i>/docker.sock``), or None."""
    from pathlib import Path

    from ..lab import LabState

    if not address.startswith("unix://"):
        return None
    state_file = Path(address[len("unix://"):]).parent.parent / "lab.json"
    try:
        state = LabState.from_json(state_file.read_text())
    except (OSError, ValueError, TypeError):
        return None
    return state if any(n.socket == address for n in state.nodes) else None


ORCHESTRATORS: dict[str, type[Orchestrator]] = {}


def register(cls: type[Orchestrator]) -> type[Orchestrator]:
    ORCHESTRATORS[cls.name] = cls
    return cls


def load_backends() -> dict[str, type[Orchestrator]]:
    import importlib

    for mod in ("swarm", "engine", "stack"):  # each registers its backend
        importlib.import_module(f"{__name__}.{mod}")

    return ORCHESTRATORS


_SPEC_FIELDS = {f.name for f in fields(DeploySpec)} - {"image", "name"}


def deploy(
    image: str | None = None,
    *,
    name: str,
    orchestrator: str = "swarm",
    engine: Engine | None = None,
    history: _history.History | None = None,
    **options: Any,
) -> DeployResult:
    """Deploy ``image`` as service ``name`` and wait (bounded) until every replica is healthy.

    ``options`` are :class:`DeploySpec` fields: replicas, publish, env, mode, constraints, preferences,
    update / rollback (an :class:`UpdatePolicy` or ``"parallelism=1,order=start-first,..."``),
    networks, mounts, secrets, configs, cpus, memory, restart, health, probe, timeout, ...
    ``action="rollback"`` rolls the service back to its previous spec.
    """
    load_backends()
    if orchestrator not in ORCHESTRATORS:
        raise ConfigError(f"unknown orchestrator {orchestrator!r}", hint=f"use one of {', '.join(sorted(ORCHESTRATORS))}")
    unknown = set(options) - _SPEC_FIELDS
    if unknown:
        raise ConfigError(f"unknown deploy option(s): {', '.join(sorted(unknown))}",
                          hint=f"use {', '.join(sorted(_SPEC_FIELDS))}")
    options = {k: v for k, v in options.items() if v is not None}
    spec = DeploySpec(image=image, name=name, **options)
    engine = engine or Engine.connect()
    return ORCHESTRATORS[orchestrator](engine, history).run(spec)


def rollback(name: str, *, orchestrator: str = "swarm", engine: Engine | None = None,
             history: _history.History | None = None, **options: Any) -> DeployResult:
    """Roll service ``name`` back to its previous spec (``docker service rollback``) and watch it."""
    return deploy(None, name=name, orchestrator=orchestrator, engine=engine, history=history,
                  action="rollback", **options)

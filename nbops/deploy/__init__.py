"""Deploy: orchestrators behind one base class (validate → apply → watch → record).

Backends register in :data:`ORCHESTRATORS`; ``deploy(..., orchestrator="swarm")`` picks one.
A Kubernetes backend would subclass :class:`Orchestrator` the same way (none ships: no cluster can
be reached here to test it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .. import history as _history
from .._display import card, frame_html, human_time
from ..engine import Engine
from ..errors import ConfigError, RolloutFailed


@dataclass
class Port:
    target: int
    published: int | None = None
    protocol: str = "tcp"

    @classmethod
    def parse(cls, spec: str | int) -> Port:
        """``8080`` (target 8080, a free host port per task) or ``80:8080`` or ``80:8080/udp``."""
        text = str(spec).strip()
        proto = "tcp"
        if "/" in text:
            text, proto = text.split("/", 1)
        try:
            if ":" in text:
                pub, tgt = text.split(":", 1)
                return cls(target=int(tgt), published=int(pub), protocol=proto)
            return cls(target=int(text), protocol=proto)
        except ValueError:
            raise ConfigError(f"bad port {spec!r}", hint="use TARGET or PUBLISHED:TARGET[/udp], e.g. 8080 or 80:8080") from None


@dataclass
class DeploySpec:
    image: str
    name: str
    replicas: int = 1
    publish: list[Port] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0


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
class DeployResult:
    """What ``%deploy`` returns: the outcome, the final tasks and the rollout timeline (``to_frame()``)."""

    service: str
    image: str
    orchestrator: str
    outcome: str
    duration_s: float
    events: list[RolloutEvent]
    tasks: list[dict[str, Any]]
    deploy_id: int | None = None

    def __repr__(self) -> str:
        running = sum(1 for t in self.tasks if t["state"] == "running")
        return (f"<DeployResult {self.service} {self.outcome}: {running}/{len(self.tasks)} tasks running "
                f"({self.image}) in {human_time(self.duration_s)} via {self.orchestrator}>")

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [(t["address"], p) for t in self.tasks if t["state"] == "running" for p in t["ports"]]

    def to_frame(self):
        import pandas as pd

        df = pd.DataFrame([asdict(e) for e in self.events],
                          columns=list(RolloutEvent.__dataclass_fields__))
        df.insert(1, "time", pd.to_datetime(df["ts"], unit="s", utc=True))
        return df

    def tasks_frame(self):
        import pandas as pd

        return pd.DataFrame(self.tasks)

    def _repr_html_(self) -> str:
        facts = {"service": self.service, "outcome": self.outcome, "image": self.image,
                 "time": human_time(self.duration_s), "via": self.orchestrator}
        tasks = self.tasks_frame()
        return card("deploy", facts, frame_html(tasks) if not tasks.empty else "")

    def plot(self, ax: Any = None):
        from .. import plot

        return plot.rollout_timeline(self.to_frame(), ax=ax)


class Orchestrator:
    """Template: :meth:`run` validates, applies, watches and records; backends fill in the parts."""

    name: ClassVar[str] = "base"

    def __init__(self, engine: Engine, history: _history.History | None = None) -> None:
        self.engine = engine
        self.history = history or _history.default()

    def validate(self, spec: DeploySpec) -> list[str]:
        """Return warnings; raise ConfigError for what cannot work."""
        if spec.replicas < 0:
            raise ConfigError(f"replicas must be ≥ 0, not {spec.replicas}", hint="use --replicas N")
        if not spec.name or not spec.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"bad service name {spec.name!r}", hint="use letters, digits, - and _")
        return []

    def apply(self, spec: DeploySpec) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def watch(self, spec: DeploySpec, handle: Any, deadline: float) -> tuple[str, list[RolloutEvent], list[dict]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def run(self, spec: DeploySpec) -> DeployResult:
        t0 = time.monotonic()
        self.validate(spec)
        handle = self.apply(spec)
        outcome, events, tasks = self.watch(spec, handle, deadline=t0 + spec.timeout)
        duration = time.monotonic() - t0
        result = DeployResult(service=spec.name, image=spec.image, orchestrator=self.name, outcome=outcome,
                              duration_s=duration, events=events, tasks=tasks)
        result.deploy_id = self.history.record(
            "deploys",
            {"ts": time.time(), "run_id": _history.current_run_id(), "service": spec.name, "image": spec.image,
             "orchestrator": self.name, "outcome": outcome, "duration_s": duration, "replicas": spec.replicas,
             "error": None if outcome == "healthy" else _last_error(events)},
            {"rollout_events": [asdict(e) for e in events]},
        )
        if outcome != "healthy":
            raise RolloutFailed(
                f"{spec.name} did not become healthy within {spec.timeout:.0f} s: {_last_error(events) or outcome}",
                hint="see .result.to_frame() on this error for the task timeline", result=result)
        return result


def _last_error(events: list[RolloutEvent]) -> str | None:
    for e in reversed(events):
        if e.message and e.state in ("failed", "rejected", "shutdown", "orphaned", "pending"):
            return f"task {e.task[:12]} {e.state}: {e.message}"
    return None


ORCHESTRATORS: dict[str, type[Orchestrator]] = {}


def register(cls: type[Orchestrator]) -> type[Orchestrator]:
    ORCHESTRATORS[cls.name] = cls
    return cls


def deploy(
    image: str,
    *,
    name: str,
    replicas: int = 1,
    publish: list[str | int] | None = None,
    env: dict[str, str] | None = None,
    orchestrator: str = "swarm",
    engine: Engine | None = None,
    history: _history.History | None = None,
    timeout: float = 120.0,
) -> DeployResult:
    """Deploy ``image`` as service ``name`` and wait (bounded) until every replica is healthy."""
    from . import swarm  # noqa: F401 - registers the backend

    if orchestrator not in ORCHESTRATORS:
        raise ConfigError(f"unknown orchestrator {orchestrator!r}", hint=f"use one of {', '.join(sorted(ORCHESTRATORS))}")
    engine = engine or Engine.connect()
    spec = DeploySpec(image=image, name=name, replicas=replicas, publish=[Port.parse(p) for p in publish or []],
                      env=dict(env or {}), timeout=timeout)
    return ORCHESTRATORS[orchestrator](engine, history).run(spec)

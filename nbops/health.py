"""Health during a rollout: the effective HEALTHCHECK, rollout lint, and a bounded HTTP probe.

The probe measures "zero downtime" instead of hoping for it: while a rollout runs it sends one HTTP
request at a time, round-robin over the service's live endpoints (a client that follows the task
list, as a DNS-round-robin client would), and records each success or failure. Requests go only to
loopback or private (lab) addresses, each bounded by a short timeout, the whole loop by a count and
a deadline.
"""

from __future__ import annotations

import http.client
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

# the engine's defaults when a HEALTHCHECK leaves a field at 0
HEALTH_DEFAULTS = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0}


@dataclass
class Healthcheck:
    test: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float

    @classmethod
    def from_api(cls, raw: dict[str, Any] | None, override: dict[str, Any] | None = None) -> Healthcheck | None:
        """Merge an image's ``Config.Healthcheck`` with a service override (API shapes, ns durations)."""
        merged = {**(raw or {}), **{k: v for k, v in (override or {}).items() if v is not None}}
        test = merged.get("Test") or []
        if not test or test[0] == "NONE":
            return None

        def secs(key: str, default: float) -> float:
            v = merged.get(key) or 0
            return v / 1e9 if v else default

        return cls(test=list(test), interval=secs("Interval", HEALTH_DEFAULTS["interval"]),
                   timeout=secs("Timeout", HEALTH_DEFAULTS["timeout"]),
                   retries=int(merged.get("Retries") or HEALTH_DEFAULTS["retries"]),
                   start_period=secs("StartPeriod", HEALTH_DEFAULTS["start_period"]))

    @property
    def time_to_unhealthy(self) -> float:
        """The longest a task can look fine before the engine marks it unhealthy."""
        return self.start_period + self.interval * self.retries


def lint_update(monitor: float, health: Healthcheck | None, failure_action: str) -> list[str]:
    """moby/moby#24854: a monitor window shorter than the time to unhealthy hides late failures."""
    if health is None or monitor >= health.time_to_unhealthy:
        return []
    return [f"update monitor {monitor:g} s is shorter than the healthcheck's start_period + interval × retries "
            f"= {health.start_period:g} + {health.interval:g} × {health.retries} = {health.time_to_unhealthy:g} s: "
            f"a task that turns unhealthy after the monitor window does not count as an update failure, so "
            f"failure_action={failure_action} never fires for it (moby/moby#24854) — "
            f"use update monitor ≥ {health.time_to_unhealthy:g}s"]


def check_probe_address(address: str) -> None:
    """The probe talks only to loopback or private (lab) addresses."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"the probe needs an IP address, not {address!r}") from None
    if not (ip.is_loopback or ip.is_private):
        raise ConfigError(f"the probe sends requests only to loopback or private (lab) addresses, not {address}",
                          hint="probe services on the lab or on your own machine")


@dataclass
class ProbeHit:
    ts: float
    address: str
    port: int
    ok: bool
    status: int | None
    latency_s: float
    error: str


class Probe:
    """One request at a time, round-robin over ``targets()``, until :meth:`stop` or the deadline.

    Recording starts with the first endpoint; afterwards "no running task" counts as a failure.
    """

    def __init__(self, targets: Callable[[], list[tuple[str, int]]], *, path: str = "/", interval: float = 0.05,
                 timeout: float = 0.5, deadline: float | None = None, max_requests: int = 20000) -> None:
        self.targets = targets
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.deadline = deadline or time.time() + 300
        self.max_requests = max_requests
        self.hits: list[ProbeHit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbops-probe", daemon=True)
        self._i = 0

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 2)

    def _loop(self) -> None:
        # a new service has no endpoint yet: that is not downtime, so wait for the first one
        while not self._stop.is_set() and time.time() < self.deadline and not self.targets():
            self._stop.wait(self.interval)
        while not self._stop.is_set() and time.time() < self.deadline and len(self.hits) < self.max_requests:
            self.hits.append(self.once())
            self._stop.wait(self.interval)

    def once(self) -> ProbeHit:
        now = time.time()
        targets = list(self.targets())
        if not targets:
            return ProbeHit(now, "", 0, False, None, 0.0, "no running task")
        address, port = targets[self._i % len(targets)]
        self._i += 1
        try:
            check_probe_address(address)
        except ConfigError as exc:  # never send it; record why
            return ProbeHit(now, address, port, False, None, 0.0, exc.message)
        t = time.monotonic()
        conn = http.client.HTTPConnection(address, port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            resp = conn.getresponse()
            resp.read(65536)
            ok = resp.status < 500
            return ProbeHit(now, address, port, ok, resp.status, time.monotonic() - t, "" if ok else resp.reason)
        except (OSError, http.client.HTTPException) as exc:
            return ProbeHit(now, address, port, False, None, time.monotonic() - t, type(exc).__name__ + f": {exc}"[:120])
        finally:
            conn.close()

    # -- results ---------------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        return len(self.hits)

    @property
    def failures(self) -> int:
        return sum(1 for h in self.hits if not h.ok)

    def summary(self) -> str:
        return f"{self.requests} requests, {self.failures} failed"

    def summary_dict(self) -> dict[str, Any]:
        per_s = self.per_second()
        return {"requests": self.requests, "failures": self.failures,
                "seconds_with_failures": int((per_s["failed"] > 0).sum()) if not per_s.empty else 0}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([h.__dict__ for h in self.hits],
                            columns=["ts", "address", "port", "ok", "status", "latency_s", "error"])

    def per_second(self, t0: float | None = None):
        """Requests, successes and failures per second since ``t0`` (default: the first request)."""
        import pandas as pd

        df = self.to_frame()
        if df.empty:
            return pd.DataFrame(columns=["second", "requests", "ok", "failed"])
        start = df["ts"].min() if t0 is None else t0
        df["second"] = (df["ts"] - start).astype(float).floordiv(1).astype(int)
        out = df.groupby("second").agg(requests=("ok", "size"), ok=("ok", "sum")).reset_index()
        out["ok"] = out["ok"].astype(int)
        out["failed"] = out["requests"] - out["ok"]
        return out

    def __repr__(self) -> str:
        return f"<Probe {self.summary()}>"

"""The engine's event stream, read in a thread with a hard deadline (``until``) and a stop switch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..engine import Engine


class EventStream:
    """Collect engine events accepted by ``keep`` from ``since`` until ``until`` (epoch seconds).

    The engine itself ends the stream at ``until``; :meth:`close` ends it earlier. A read timeout
    (no event for the client's timeout) or a stream the engine closed early (it stopped or restarted)
    reconnects from the last event seen, never past ``until``.
    """

    def __init__(self, engine: Engine, *, since: float, until: float, keep: Callable[[dict[str, Any]], bool],
                 types: tuple[str, ...] = ("service", "container")) -> None:
        self.engine = engine
        self.since = since
        self.until = until
        self.keep = keep
        self.types = types
        self.error: str | None = None
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._arrived = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="nbops-events", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        since = int(self.since)
        seen: set[tuple] = set()  # a reconnect from `since` (whole seconds) delivers that second's events again
        while not self._stop.is_set() and time.time() < self.until:
            try:
                self._stream = self.engine.api.events(since=since, until=int(self.until) + 1, decode=True,
                                                      filters={"type": list(self.types)})
                for ev in self._stream:
                    since = int(ev.get("time", since))
                    if self._stop.is_set():
                        break
                    key = (ev.get("timeNano"), ev.get("Type"), ev.get("Action"), (ev.get("Actor") or {}).get("ID"))
                    if key in seen:
                        continue
                    seen.add(key)
                    if self.keep(ev):
                        with self._lock:
                            self._items.append(ev)
                        self._arrived.set()
                # the engine ends the stream at `until`, or earlier when it stops (a restarted
                # manager): then the loop reconnects from the last event seen
                time.sleep(0.2)
            except Exception as exc:  # a read timeout or a closed socket: retry until the deadline
                if self._stop.is_set():
                    return
                self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s, less when an event arrives; True when one did."""
        arrived = self._arrived.wait(timeout)
        self._arrived.clear()
        return arrived

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            items, self._items = self._items, []
        return items

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        self._thread.join(timeout=2)


def event_ts(ev: dict[str, Any]) -> float:
    nano = ev.get("timeNano")
    return nano / 1e9 if nano else float(ev.get("time", time.time()))


def health_of(action: str) -> str | None:
    """``health_status: healthy`` → ``healthy`` (the engine sends no event for ``starting``)."""
    if action.startswith("health_status"):
        return action.split(":", 1)[1].strip()
    return None

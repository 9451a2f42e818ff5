"""The one way nbops talks to a Docker engine: address resolution, timeouts, error translation.

Address: the ``host`` argument, else ``$DOCKER_HOST``, else the local lab's first node.
Every call made through :meth:`Engine.call` is bounded by the client's timeout and turns docker-py
and requests exceptions into :mod:`nbops.errors`, each with the address tried and what to do.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from . import paths
from .errors import EngineError, EngineTimeout, EngineUnreachable, NbopsError, NotFound

if TYPE_CHECKING:  # pragma: no cover
    import docker

T = TypeVar("T")

DEFAULT_TIMEOUT = float(os.environ.get("NBOPS_TIMEOUT", "30"))
LAB_HINT = "start the local lab with `nbops lab up` (or `%nbops lab up`), or set DOCKER_HOST"


def lab_socket(node: int = 1) -> str:
    return f"unix://{paths.lab_dir() / f'n{node}' / 'docker.sock'}"


def resolve_address(host: str | None = None) -> str:
    if host:
        return host if "://" in host else f"unix://{host}"
    env = os.environ.get("DOCKER_HOST")
    if env:
        return env
    return lab_socket(1)


class Engine:
    """A connected engine. Create with :meth:`connect`; pass it explicitly to the core functions."""

    def __init__(self, client: docker.DockerClient, address: str, timeout: float) -> None:
        self.client = client
        self.address = address
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<Engine {self.address}>"

    @classmethod
    def connect(cls, host: str | None = None, *, timeout: float | None = None) -> Engine:
        """Connect and check the engine answers (one ``/version`` call, bounded by ``timeout``)."""
        import docker

        address = resolve_address(host)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        try:
            client = docker.DockerClient(base_url=address, version="auto", timeout=timeout)
        except Exception as exc:  # docker-py wraps every failure of the version probe
            raise translate(exc, address, "connect") from exc
        if address.startswith(("unix://", "/")):
            # no HTTP proxy ever applies to a unix socket; requests would otherwise re-read the proxy
            # environment on every call (about 2 ms each, measured with cProfile on a build)
            client.api.trust_env = False
        return cls(client, address, timeout)

    @property
    def api(self) -> Any:
        return self.client.api

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)``; translate failures into nbops errors mentioning ``what``."""
        try:
            return fn(*args, **kwargs)
        except NbopsError:
            raise
        except Exception as exc:
            raise translate(exc, self.address, what) from exc

    @cached_property
    def version(self) -> dict[str, Any]:
        return self.call("read the engine version", self.client.version)

    @cached_property
    def info(self) -> dict[str, Any]:
        return self.call("read the engine info", self.client.info)

    @property
    def api_version(self) -> str:
        return str(self.client.api._version)

    def cli(self) -> CLI:
        """The docker CLI pointed at this engine, preferring one that can run BuildKit."""
        return CLI(self.address)


class CLI:
    """The docker command line, for what the SDK cannot do (BuildKit builds, build secrets)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.path, self.buildkit = find_cli()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.address
        env.update(extra)
        return env

    def run(self, args: list[str], *, timeout: float, **kw: Any) -> subprocess.CompletedProcess:
        if not self.path:
            raise EngineError("no docker CLI found", hint="install Debian's docker.io (it ships /usr/bin/docker)")
        return subprocess.run([self.path, *args], env=self.env(), timeout=timeout, **kw)


@functools.lru_cache(maxsize=4)
def find_cli() -> tuple[str | None, bool]:
    """Return (path, can_buildkit). A CLI of version < 23 has BuildKit built in; newer need buildx."""
    candidates = [os.environ.get("NBOPS_DOCKER_CLI"), "/usr/bin/docker", shutil.which("docker")]
    fallback = None
    for path in candidates:
        if not path or not os.path.exists(path):
            continue
        fallback = fallback or path
        try:
            out = subprocess.run([path, "version", "--format", "{{.Client.Version}}"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            major = int(out.split(".")[0]) if out else 0
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        if 0 < major < 23:
            return path, True
        probe = subprocess.run([path, "buildx", "version"], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return path, True
    return fallback, False


def stream_response(stream: Any) -> Any:
    """The HTTP response behind a docker-py stream (``api.push/build(..., stream=True)``), taken
    before the stream is read, so that :func:`close_response` can end it later; None if not found."""
    frame = getattr(stream, "gi_frame", None)  # docker-py's _stream_helper(self, response, decode)
    return frame.f_locals.get("response") if frame is not None else None


def close_response(response: Any) -> None:
    """Hang up on a streaming request: dockerd cancels a push or a build whose client went away.

    The socket is shut down first: that wakes a thread blocked reading it, which ``close`` alone
    does not do on Linux. Best effort, never raises.
    """
    if response is None:
        return
    try:
        sock = response.raw._fp.fp.raw._sock  # urllib3 -> http.client -> SocketIO -> socket
        sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    try:
        response.close()
    except Exception:  # hanging up must not hide what made us hang up
        pass


def translate(exc: BaseException, address: str, what: str) -> NbopsError:
    """Map a docker-py / requests exception to one nbops error with a hint."""
    import docker.errors
    import requests.exceptions

    text = str(exc)
    chain = _chain(exc)
    if any(isinstance(e, (requests.exceptions.ReadTimeout, TimeoutError)) for e in chain) or "timed out" in text.lower():
        return EngineTimeout(
            f"the Docker engine at {address} did not answer within the timeout while trying to {what}",
            hint="it may be hung or overloaded: check the daemon (nbops doctor), or raise NBOPS_TIMEOUT",
            address=address,
        )
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(f"not found while trying to {what}: {_explain(exc)}",
                        hint=f"check the name, or build/pull it first (DOCKER_HOST={address} docker images)",
                        address=address)
    if isinstance(exc, docker.errors.APIError):
        return EngineError(f"the engine refused to {what}: {_explain(exc)}", address=address, status=exc.status_code)
    unreachable_types = (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionRefusedError)
    if any(isinstance(e, unreachable_types) for e in chain) or isinstance(exc, docker.errors.DockerException):
        return EngineUnreachable(
            f"no Docker engine answers at {address}",
            hint=LAB_HINT,
            address=address,
        )
    return EngineError(f"failed to {what} on {address}: {text}", address=address)


def _explain(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        nxt = cur.__cause__ or cur.__context__
        args = [a for a in getattr(cur, "args", ()) if isinstance(a, BaseException)]
        cur = nxt or (args[0] if args else None)
    return seen

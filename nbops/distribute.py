"""Distribute images: push to a registry (with per-layer progress and a verified digest).

docker-py's push does not raise when the stream reports an error (docker-py#3161, #3277): nbops
reads every chunk and raises :class:`PushError` itself. After a push the registry's manifest digest
is fetched over the registry HTTP API v2 and compared with the digest the engine reported.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import history as _history
from . import paths
from ._display import card, frame_html, human_size, human_time
from .engine import Engine, close_response, stream_response
from .errors import AuthError, ConfigError, EngineError, EngineTimeout, NbopsError, PushError

if TYPE_CHECKING:  # pragma: no cover
    from .naming import Policy
    from .progress import LayerProgress
    from .registry import Credentials


@dataclass
class LayerTransfer:
    """One layer of a push or a pull: its final status, bytes moved and how long it took."""

    layer: str
    status: str = "waiting"
    bytes: int | None = None
    duration_s: float | None = None
    _t_start: float | None = field(default=None, repr=False)


LayerPush = LayerPull = LayerTransfer


@dataclass
class PushResult:
    """What ``%push`` returns: the reference, the digest (verified against the registry), per-layer rows."""

    image: str
    ref: str
    digest: str
    verified: bool
    duration_s: float
    layers: list[LayerPush]
    push_id: int | None = None

    @property
    def bytes_sent(self) -> int:
        return sum(lp.bytes or 0 for lp in self.layers if lp.status == "pushed")

    @property
    def bytes_skipped(self) -> int:
        return sum(lp.bytes or 0 for lp in self.layers if lp.status != "pushed")

    @property
    def throughput(self) -> float | None:
        """Bytes sent per second over the whole push (None when nothing was sent)."""
        return self.bytes_sent / self.duration_s if self.bytes_sent and self.duration_s > 0 else None

    @property
    def pinned(self) -> str:
        """``repo@digest``: the immutable reference to deploy."""
        return f"{self.ref.rsplit(':', 1)[0] if _has_tag(self.ref) else self.ref}@{self.digest}"

    def __repr__(self) -> str:
        sent = sum(1 for lp in self.layers if lp.status == "pushed")
        return (f"<PushResult {self.ref} {self.digest} {'verified' if self.verified else 'NOT VERIFIED'}; "
                f"{sent}/{len(self.layers)} layers sent ({human_size(self.bytes_sent)}) in {human_time(self.duration_s)}"
                f"{self._rate()}>")

    def _rate(self) -> str:
        return f", {human_size(int(self.throughput))}/s" if self.throughput else ""

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in asdict(lp).items() if not k.startswith("_")} for lp in self.layers],
                            columns=["layer", "status", "bytes", "duration_s"])

    def _repr_html_(self) -> str:
        facts = {"ref": self.ref, "digest": self.digest[:19] + "…", "verified": "yes" if self.verified else "NO",
                 "sent": human_size(self.bytes_sent), "skipped": human_size(self.bytes_skipped),
                 "time": human_time(self.duration_s) + self._rate()}
        return card("push", facts, frame_html(self.to_frame()))


def lab_registry() -> str | None:
    """The address of the local lab's registry, if a lab state exists."""
    try:
        state = json.loads((paths.lab_dir() / "lab.json").read_text())
        return state.get("registry")
    except (OSError, ValueError):
        return None


def default_registry(registry: str | None = None) -> str:
    reg = registry or lab_registry()
    if not reg:
        raise ConfigError("no registry configured", hint="start the lab (`nbops lab up`) or set %config NbopsMagics.registry")
    return reg


# the reference grammar of distribution/reference (docker's own parser), without IPv6 hosts
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
# docker writes the separator [-]*; an empty separator makes Python's backtracking regex exponential
# on a long name with a bad character, so "-+" (the same language: runs of [a-z0-9] already join)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                        r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$", re.ASCII)


def target_ref(image: str, to: str | None, registry: str | None) -> str:
    """Where ``image`` goes: ``to`` if given, else ``<registry>/<repo>:<tag>``."""
    ref = _target_ref(image, to, registry)
    if not _REFERENCE.match(ref) or len(ref.split("@")[0].rsplit(":", 1)[0]) > 255:
        raise ConfigError(f"{ref!r} is not a valid image reference (from image {image!r}"
                          + (f" and --to {to!r})" if to else ")"),
                          hint="use lowercase REPO[:TAG] or REGISTRY[:PORT]/REPO[:TAG], e.g. 10.1.2.1:5000/web:1")
    return ref


def _target_ref(image: str, to: str | None, registry: str | None) -> str:
    if to:
        return to if _has_tag(to) or "@" in to else f"{to}:{_tag_of(image)}"
    repo = image
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    if _registry_of(repo):
        return repo if _has_tag(repo) else f"{repo}:latest"
    return f"{default_registry(registry)}/{repo if _has_tag(repo) else repo + ':latest'}"


def plan_ref(image: str, to: str | None = None, *, registry: str | None = None, template: str | None = None,
             repo_path: str | None = None, **values: Any) -> str:
    """Where a push goes: ``to`` if given, else the naming ``template`` rendered (git state of
    ``repo_path``), else ``<registry>/<repo>:<tag>``."""
    if to or not template:
        return to if to and to.startswith(("dir:", "archive:")) else target_ref(image, to, registry)
    from .naming import name_for

    reg = registry or lab_registry() or ""
    return name_for(image, template, registry=reg, repo_path=repo_path, **values)


def push(
    image: str,
    to: str | None = None,
    *,
    engine: Engine | None = None,
    registry: str | None = None,
    auth: Credentials | dict[str, Any] | None = None,
    history: _history.History | None = None,
    progress: str | None = None,
    verify: bool = True,
    policy: Policy | None = None,
) -> Any:
    """Tag ``image`` as the target reference and push it, failing loudly on any stream error.

    ``to`` may also be ``dir:/share[/NAME:TAG]`` (an OCI layout, see :func:`nbops.archive.push_dir`)
    or ``archive:/path.tar[.gz]`` (``docker save`` + checksum, see :func:`nbops.archive.export`).
    Credentials: ``auth`` > :func:`nbops.registry.login` > the docker config. ``policy`` checks the
    reference before anything is sent.
    """
    from . import archive
    from .progress import LayerProgress
    from .registry import Registry, credentials

    if to and to.startswith("dir:"):
        return archive.push_dir(image, to, engine=engine, history=history)
    if to and to.startswith("archive:"):
        return archive.export(image, to[len("archive:"):], engine=engine, history=history)
    engine = engine or Engine.connect()
    ref = target_ref(image, to, registry)
    repo, tag = ref.rsplit(":", 1)
    img = engine.call(f"find image {image}", engine.client.images.get, image)
    creds = credentials(_registry_of(ref) or "", auth) if _registry_of(ref) else None
    if policy is not None:
        local = [d.split("@", 1)[1] for d in img.attrs.get("RepoDigests", []) if d.split("@", 1)[0] == repo]
        policy.check(ref, local_digests=local, registry=Registry(_registry_of(ref) or "", credentials=creds,
                                                                  engine=engine))
    if ref not in img.tags:
        engine.call(f"tag {image} as {ref}", img.tag, repo, tag)
    t0 = time.monotonic()
    store = history or _history.default()
    with LayerProgress(f"push {ref}", requested=progress) as display:
        stream = engine.call(f"push {ref}", engine.api.push, repo, tag=tag, stream=True, decode=True,
                             auth_config=creds.auth_config() if creds else None)
        response = stream_response(stream)
        try:
            layers, digest, error = follow_push(stream, display, tag=tag)
        except KeyboardInterrupt:
            # a kernel keeps the interrupted frame (and so this stream) alive: hang up, or the engine
            # goes on pushing behind the user's back
            close_response(response)
            _record_push_failure(store, image, ref, t0, "interrupted (KeyboardInterrupt); the push was cancelled")
            raise
        except Exception as exc:
            close_response(response)
            err = _push_stream_error(exc, engine, ref)
            _record_push_failure(store, image, ref, t0, err.message)
            raise err from exc
        failed = bool(error or not digest)
        display.close(failed=failed, summary=None if failed else _summary(layers, "pushed"))
    duration = time.monotonic() - t0
    if error and creds:
        error = error.replace(creds.password.reveal(), "******") if creds.password.reveal() else error
    if error or not digest:
        store.record("pushes", {"ts": time.time(), "run_id": _history.current_run_id(), "image": image, "ref": ref,
                                "duration_s": duration, "ok": False, "error": error or "no digest reported"})
        low = (error or "").lower()
        if any(w in low for w in ("unauthorized", "authentication required", "denied", "no basic auth")):
            who = f"as {creds.username} ({creds.source})" if creds else "without credentials"
            raise AuthError(f"the registry refused the push of {ref} {who}: {error}",
                            hint="log in: %nbops registry login REGISTRY --user NAME (or %push --user NAME), "
                                 "or check the password", ref=ref)
        raise PushError(f"push of {ref} failed: {error or 'no digest reported'}",
                        hint="check that the registry is up (nbops lab status) and reachable from the engine", ref=ref)
    verified = False
    if verify:
        remote = manifest_digest(ref, engine=engine, auth=creds)
        if remote != digest:
            raise PushError(f"the registry serves {remote} for {ref} but the engine pushed {digest}",
                            hint="something else pushed the same tag meanwhile; push again or use an immutable tag",
                            ref=ref, digest=digest, remote_digest=remote)
        verified = True
    result = PushResult(image=image, ref=ref, digest=digest, verified=verified, duration_s=duration,
                        layers=layers)
    result.push_id = store.record(
        "pushes",
        {"ts": time.time(), "run_id": _history.current_run_id(), "image": image, "ref": ref, "digest": digest,
         "verified": verified, "duration_s": duration, "bytes_sent": result.bytes_sent,
         "bytes_skipped": result.bytes_skipped, "ok": True},
        {"push_layers": [{"layer": lp.layer, "status": lp.status, "bytes": lp.bytes, "duration_s": lp.duration_s}
                         for lp in result.layers]},
    )
    return result


def _push_stream_error(exc: BaseException, engine: Engine, ref: str) -> NbopsError:
    """What a broken push stream means. The engine reports progress only while bytes reach the
    registry, so a read timeout with an engine that still answers a ping is a stalled registry."""
    from .engine import translate

    err = translate(exc, engine.address, f"push {ref}")
    if not isinstance(err, EngineTimeout):
        return err
    try:
        engine.call("ping the engine after the push stalled", engine.api.ping)
    except EngineError:
        return err  # the engine itself is hung
    registry = _registry_of(ref) or "the registry"
    return PushError(f"the push of {ref} made no progress for {engine.timeout:.0f} s: the registry {registry} "
                     "is stalled or too slow (the engine answers); the push was cancelled, nothing was tagged there",
                     hint=f"check the registry (curl http://{registry}/v2/, nbops lab status) and the network to it, "
                          "then push again; on a slow link raise the timeout (%config NbopsMagics.timeout)",
                     ref=ref, registry=registry)


def _record_push_failure(store: _history.History, image: str, ref: str, t0: float, error: str) -> None:
    try:
        store.record("pushes", {"ts": time.time(), "run_id": _history.current_run_id(), "image": image, "ref": ref,
                                "duration_s": time.monotonic() - t0, "ok": False, "error": error})
    except Exception:  # recording must never hide the push error
        pass


@dataclass
class PullResult:
    """What ``%pull`` returns: the reference, the digest (checked against the registry), per-layer rows."""

    ref: str
    digest: str
    image_id: str
    verified: bool
    duration_s: float
    layers: list[LayerPull]
    pull_id: int | None = None

    @property
    def bytes_received(self) -> int:
        return sum(lp.bytes or 0 for lp in self.layers if lp.status == "pulled")

    def __repr__(self) -> str:
        new = sum(1 for lp in self.layers if lp.status == "pulled")
        return (f"<PullResult {self.ref} {self.digest} {'verified' if self.verified else 'NOT VERIFIED'}; "
                f"{new}/{len(self.layers)} layers pulled ({human_size(self.bytes_received)}) in {human_time(self.duration_s)}>")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in asdict(lp).items() if not k.startswith("_")} for lp in self.layers],
                            columns=["layer", "status", "bytes", "duration_s"])

    def _repr_html_(self) -> str:
        facts = {"ref": self.ref, "digest": self.digest[:19] + "…", "image id": self.image_id[:19] + "…",
                 "verified": "yes" if self.verified else "NO", "received": human_size(self.bytes_received),
                 "time": human_time(self.duration_s)}
        return card("pull", facts, frame_html(self.to_frame()))


def pull(
    ref: str,
    *,
    engine: Engine | None = None,
    registry: str | None = None,
    auth: Credentials | dict[str, Any] | None = None,
    history: _history.History | None = None,
    progress: str | None = None,
    tag: str | None = None,
) -> Any:
    """Pull ``ref`` (``REGISTRY/REPO:TAG``, a bare ``REPO:TAG`` from the configured registry,
    ``dir:/share/NAME:TAG`` or ``archive:/path.tar[.gz]``); a stream error raises."""
    from . import archive
    from .errors import RegistryError
    from .progress import LayerProgress
    from .registry import credentials

    if ref.startswith("dir:"):
        return archive.pull_dir(ref, engine=engine, tag=tag, history=history)
    if ref.startswith("archive:"):
        return archive.load(ref[len("archive:"):], engine=engine, history=history)
    engine = engine or Engine.connect()
    full = ref if _registry_of(ref) else f"{default_registry(registry)}/{ref}"
    if "@" in full:
        repo, reference = full.split("@", 1)
    else:
        repo, reference = (full.rsplit(":", 1) if _has_tag(full) else (full, "latest"))
    full = f"{repo}@{reference}" if reference.startswith("sha256:") else f"{repo}:{reference}"
    creds = credentials(_registry_of(full) or "", auth)
    t0 = time.monotonic()
    with LayerProgress(f"pull {full}", requested=progress) as display:
        try:
            stream = engine.call(f"pull {full}", engine.api.pull, repo, tag=reference, stream=True, decode=True,
                                 auth_config=creds.auth_config() if creds else None)
        except NbopsError as exc:
            (history or _history.default()).record("pulls", {
                "ts": time.time(), "run_id": _history.current_run_id(), "kind": "registry", "source": full,
                "image": full, "duration_s": time.monotonic() - t0, "ok": False, "error": exc.message})
            raise
        try:
            layers, digest, error = follow_pull(stream, display)
        except Exception as exc:
            from .engine import translate

            raise translate(exc, engine.address, f"pull {full}") from exc
        failed = bool(error or not digest)
        display.close(failed=failed, summary=None if failed else _summary(layers, "pulled"))
    duration = time.monotonic() - t0
    store = history or _history.default()
    if error and creds and creds.password.reveal():
        error = error.replace(creds.password.reveal(), "******")
    if error or not digest:
        store.record("pulls", {"ts": time.time(), "run_id": _history.current_run_id(), "kind": "registry",
                               "source": full, "image": full, "duration_s": duration, "ok": False,
                               "error": error or "no digest reported"})
        low = (error or "").lower()
        if any(w in low for w in ("unauthorized", "authentication required", "denied", "no basic auth")):
            who = f"as {creds.username} ({creds.source})" if creds else "without credentials"
            raise AuthError(f"the registry refused the pull of {full} {who}", ref=full,
                            hint="log in: %nbops registry login REGISTRY --user NAME, or check the password")
        raise RegistryError(f"pull of {full} failed: {error or 'no digest reported'}", ref=full,
                            hint="list what exists: %nbops registry tags REPO")
    remote = manifest_digest(full, engine=engine, auth=creds)
    image_id = engine.call(f"inspect {full}", engine.api.inspect_image, full)["Id"]
    if tag:
        engine.call(f"tag {full} as {tag}", engine.api.tag, image_id, *_split_tag(tag))
    result = PullResult(ref=full, digest=digest, image_id=image_id, verified=remote == digest, duration_s=duration,
                        layers=layers)
    if not result.verified:
        raise PushError(f"pulled {digest} for {full} but the registry now serves {remote}",
                        hint="the tag moved during the pull; pull by digest", ref=full)
    result.pull_id = store.record("pulls", {
        "ts": time.time(), "run_id": _history.current_run_id(), "kind": "registry", "source": full, "image": full,
        "digest": digest, "image_id": image_id, "duration_s": duration, "bytes": result.bytes_received,
        "layers_new": sum(1 for lp in result.layers if lp.status == "pulled"), "layers_total": len(result.layers),
        "ok": True})
    return result


def follow_push(stream: Iterable[dict[str, Any]], display: LayerProgress, *,
                tag: str) -> tuple[list[LayerPush], str | None, str | None]:
    """Read a push stream (``api.push(..., stream=True, decode=True)``) to its end or first error,
    reporting each layer to ``display``; returns the layer rows, the digest and the error message."""
    layers: dict[str, LayerPush] = {}
    digest = error = None
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            error = chunk.get("error") or chunk.get("errorDetail", {}).get("message")
            break
        if "aux" in chunk and "Digest" in chunk["aux"]:
            digest = chunk["aux"]["Digest"]
            continue
        lid = chunk.get("id")
        status = chunk.get("status", "")
        if not lid or lid == tag or len(lid) != 12:
            continue
        lp = layers.setdefault(lid, LayerPush(layer=lid))
        detail = chunk.get("progressDetail") or {}
        if status == "Pushing":
            lp.status = "pushing"
            # `total` is the layer's content size, `current` the tar bytes read: for a tiny layer
            # current (2 kB of tar headers) exceeds total (8 B), so the bytes sent are the larger one
            sent = max(int(detail.get("total") or 0), int(detail.get("current") or 0))
            lp.bytes = max(lp.bytes or 0, sent) or None
            display.state(lid, "pushing", current=detail.get("current"), total=lp.bytes)
        elif status == "Pushed":
            lp.status = "pushed"
            lp.duration_s = display.finish(lid, "pushed", nbytes=lp.bytes)
        elif status == "Layer already exists":
            lp.status, lp.duration_s = "exists", 0.0
            display.finish(lid, "exists", duration_s=0.0)
        elif status.startswith("Mounted from"):
            lp.status, lp.duration_s = "mounted", 0.0
            display.finish(lid, "mounted", duration_s=0.0, note=status[len("Mounted "):])
        elif status in ("Preparing", "Waiting"):
            display.state(lid, "waiting")
    return list(layers.values()), digest, error


def follow_pull(stream: Iterable[dict[str, Any]],
                display: LayerProgress) -> tuple[list[LayerPull], str | None, str | None]:
    """Read a pull stream (``api.pull(..., stream=True, decode=True)``) like :func:`follow_push`."""
    layers: dict[str, LayerPull] = {}
    digest = error = None
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            error = chunk.get("error") or chunk.get("errorDetail", {}).get("message")
            break
        status = chunk.get("status", "")
        if status.startswith("Digest: "):
            digest = status.split(" ", 1)[1].strip()
            continue
        lid = chunk.get("id")
        if not lid or len(lid) != 12:
            continue
        lp = layers.setdefault(lid, LayerPull(layer=lid))
        detail = chunk.get("progressDetail") or {}
        if status in ("Downloading", "Extracting"):
            lp.status = status.lower()
            if status == "Downloading" and detail.get("total"):
                lp.bytes = int(detail["total"])
            display.state(lid, lp.status, current=detail.get("current"), total=lp.bytes)
        elif status == "Pull complete":
            lp.status = "pulled"
            lp.duration_s = display.finish(lid, "pulled", nbytes=lp.bytes)
        elif status == "Already exists":
            lp.status, lp.duration_s = "exists", 0.0
            display.finish(lid, "exists", duration_s=0.0)
        elif status in ("Pulling fs layer", "Waiting"):
            display.state(lid, "waiting")
    return list(layers.values()), digest, error


def _summary(layers: list[Any], moved: str) -> str:
    n = sum(1 for lp in layers if lp.status == moved)
    size = human_size(sum(lp.bytes or 0 for lp in layers if lp.status == moved))
    return f"{n}/{len(layers)} layers {moved} ({size}), {len(layers) - n} already there"


def _split_tag(ref: str) -> tuple[str, str]:
    return (ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1]) if _has_tag(ref) else (ref, "latest")


def manifest_digest(ref: str, *, engine: Engine | None = None, auth: Credentials | dict[str, Any] | None = None,
                    timeout: float = 10.0) -> str:
    """The digest the registry serves for ``ref`` (``Docker-Content-Digest`` of its manifest)."""
    from .registry import Registry, split_ref

    reg, repo, reference = split_ref(ref)
    return Registry(reg, credentials=auth, engine=engine, timeout=timeout).digest(repo, reference)


def _has_tag(ref: str) -> bool:
    last = ref.rsplit("/", 1)[-1]
    return ":" in last and "@" not in last


def _tag_of(ref: str) -> str:
    return ref.rsplit(":", 1)[1] if _has_tag(ref) else "latest"


def _registry_of(ref: str) -> str | None:
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


__all__ = ["push", "pull", "plan_ref", "PushResult", "PullResult", "LayerTransfer", "LayerPush", "LayerPull", "follow_push", "follow_pull", "manifest_digest", "target_ref", "default_registry", "lab_registry"]

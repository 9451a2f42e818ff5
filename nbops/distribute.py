"""Distribute images: push to a registry (with per-layer progress and a verified digest).

docker-py's push does not raise when the stream reports an error (docker-py#3161, #3277): nbops
reads every chunk and raises :class:`PushError` itself. After a push the registry's manifest digest
is fetched over the registry HTTP API v2 and compared with the digest the engine reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from . import history as _history
from . import paths
from ._display import card, frame_html, human_size, human_time
from .engine import Engine
from .errors import AuthError, ConfigError, PushError, RegistryError

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


@dataclass
class LayerPush:
    layer: str
    status: str = "waiting"
    bytes: int | None = None
    duration_s: float | None = None
    _t_start: float | None = field(default=None, repr=False)


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
    def pinned(self) -> str:
        """``repo@digest``: the immutable reference to deploy."""
        return f"{self.ref.rsplit(':', 1)[0] if _has_tag(self.ref) else self.ref}@{self.digest}"

    def __repr__(self) -> str:
        sent = sum(1 for lp in self.layers if lp.status == "pushed")
        return (f"<PushResult {self.ref} {self.digest} {'verified' if self.verified else 'NOT VERIFIED'}; "
                f"{sent}/{len(self.layers)} layers sent ({human_size(self.bytes_sent)}) in {human_time(self.duration_s)}>")

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in asdict(lp).items() if not k.startswith("_")} for lp in self.layers],
                            columns=["layer", "status", "bytes", "duration_s"])

    def _repr_html_(self) -> str:
        facts = {"ref": self.ref, "digest": self.digest[:19] + "…", "verified": "yes" if self.verified else "NO",
                 "sent": human_size(self.bytes_sent), "skipped": human_size(self.bytes_skipped),
                 "time": human_time(self.duration_s)}
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


def target_ref(image: str, to: str | None, registry: str | None) -> str:
    """Where ``image`` goes: ``to`` if given, else ``<registry>/<repo>:<tag>``."""
    if to:
        return to if _has_tag(to) or "@" in to else f"{to}:{_tag_of(image)}"
    repo = image
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    if _registry_of(repo):
        return repo if _has_tag(repo) else f"{repo}:latest"
    return f"{default_registry(registry)}/{repo if _has_tag(repo) else repo + ':latest'}"


def push(
    image: str,
    to: str | None = None,
    *,
    engine: Engine | None = None,
    registry: str | None = None,
    auth: dict[str, str] | None = None,
    history: _history.History | None = None,
    progress: str | None = None,
    verify: bool = True,
) -> PushResult:
    """Tag ``image`` as the target reference and push it, failing loudly on any stream error."""
    from .progress import Progress

    engine = engine or Engine.connect()
    ref = target_ref(image, to, registry)
    repo, tag = ref.rsplit(":", 1)
    img = engine.call(f"find image {image}", engine.client.images.get, image)
    if ref not in img.tags:
        engine.call(f"tag {image} as {ref}", img.tag, repo, tag)
    t0 = time.monotonic()
    layers: dict[str, LayerPush] = {}
    digest = None
    error = None
    with Progress(f"push {ref}", total=None, unit="B", unit_scale=True, requested=progress) as bar:
        stream = engine.call(f"push {ref}", engine.api.push, repo, tag=tag, stream=True, decode=True, auth_config=auth)
        try:
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
                now = time.monotonic()
                detail = chunk.get("progressDetail") or {}
                if status == "Pushing":
                    lp.status = "pushing"
                    lp._t_start = lp._t_start or now
                    if detail.get("total"):
                        lp.bytes = int(detail["total"])
                        bar.set_total(sum(x.bytes or 0 for x in layers.values()))
                    if detail.get("current") is not None:
                        bar.moveto(sum((x.bytes or 0) if x.status == "pushed" else 0 for x in layers.values())
                                   + int(detail["current"]), note=lid)
                elif status == "Pushed":
                    lp.status = "pushed"
                    lp.duration_s = now - (lp._t_start or now)
                elif status == "Layer already exists" or status.startswith("Mounted from"):
                    lp.status = "exists" if status == "Layer already exists" else "mounted"
                    lp.duration_s = 0.0
        except Exception as exc:
            from .engine import translate

            raise translate(exc, engine.address, f"push {ref}") from exc
    duration = time.monotonic() - t0
    store = history or _history.default()
    if error or not digest:
        store.record("pushes", {"ts": time.time(), "run_id": _history.current_run_id(), "image": image, "ref": ref,
                                "duration_s": duration, "ok": False, "error": error or "no digest reported"})
        low = (error or "").lower()
        if "unauthorized" in low or "authentication required" in low or "denied" in low:
            raise AuthError(f"the registry refused the credentials for {ref}: {error}",
                            hint="log in with nbops.distribute.login(...) / %push --user, or check the password",
                            ref=ref)
        raise PushError(f"push of {ref} failed: {error or 'no digest reported'}",
                        hint="check that the registry is up (nbops lab status) and reachable from the engine", ref=ref)
    verified = False
    if verify:
        remote = manifest_digest(ref, engine=engine, auth=auth)
        if remote != digest:
            raise PushError(f"the registry serves {remote} for {ref} but the engine pushed {digest}",
                            hint="something else pushed the same tag meanwhile; push again or use an immutable tag",
                            ref=ref, digest=digest, remote_digest=remote)
        verified = True
    result = PushResult(image=image, ref=ref, digest=digest, verified=verified, duration_s=duration,
                        layers=list(layers.values()))
    result.push_id = store.record(
        "pushes",
        {"ts": time.time(), "run_id": _history.current_run_id(), "image": image, "ref": ref, "digest": digest,
         "verified": verified, "duration_s": duration, "bytes_sent": result.bytes_sent,
         "bytes_skipped": result.bytes_skipped, "ok": True},
        {"push_layers": [{"layer": lp.layer, "status": lp.status, "bytes": lp.bytes, "duration_s": lp.duration_s}
                         for lp in result.layers]},
    )
    return result


def registry_url(registry: str, engine: Engine | None = None) -> str:
    host = registry.split("/")[0]
    insecure = host.startswith(("127.", "localhost", "[::1]"))
    if engine is not None and not insecure:
        try:
            cfg = engine.info.get("RegistryConfig", {}).get("IndexConfigs", {}).get(host, {})
            insecure = cfg.get("Secure") is False
        except Exception:
            insecure = False
        if host == lab_registry():
            insecure = True
    return f"{'http' if insecure else 'https'}://{host}"


def manifest_digest(ref: str, *, engine: Engine | None = None, auth: dict[str, str] | None = None,
                    timeout: float = 10.0) -> str:
    """The digest the registry serves for ``ref`` (``Docker-Content-Digest`` of its manifest)."""
    import requests

    reg = _registry_of(ref)
    if not reg:
        raise ConfigError(f"{ref} names no registry", hint="use REGISTRY/REPO:TAG")
    path = ref[len(reg) + 1:]
    repo, tag = (path.split("@", 1) if "@" in path else path.rsplit(":", 1))
    url = f"{registry_url(reg, engine)}/v2/{repo}/manifests/{tag}"
    creds = (auth["username"], auth["password"]) if auth else None
    try:
        resp = requests.head(url, headers={"Accept": MANIFEST_TYPES}, timeout=timeout, auth=creds)
    except requests.RequestException as exc:
        raise RegistryError(f"the registry at {reg} is unreachable: {type(exc).__name__}",
                            hint="check `nbops lab status` or the registry address", registry=reg) from exc
    if resp.status_code == 401:
        raise AuthError(f"the registry at {reg} wants credentials for {repo}", hint="pass auth=... / %push --user")
    if resp.status_code != 200:
        raise RegistryError(f"the registry at {reg} answered {resp.status_code} for {ref}", registry=reg)
    return resp.headers.get("Docker-Content-Digest", "")


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


__all__ = ["push", "PushResult", "LayerPush", "manifest_digest", "target_ref", "default_registry", "lab_registry"]

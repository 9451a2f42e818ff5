"""The registry HTTP API v2 and registry credentials.

Credentials come, in this order, from an explicit ``auth`` argument, from :func:`login` earlier in
this process (kept in memory only, never written anywhere by nbops), or from the docker config
(``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: its ``auths`` entries and its
credential helpers, read through docker-py). Note that ``docker login`` itself writes the password
base64-encoded (i.e. in plain text) into that config.json unless a ``credsStore``/``credHelpers``
is configured; nbops only reads it.

A password is held in a :class:`Secret`, whose ``repr``/``str`` never show it, so it cannot reach an
output cell, a log line, an error message or the history store by accident.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import AuthError, ConfigError, NotFound, RegistryError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import requests

    from .engine import Engine

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
MAX_PAGES = 100  # every paginated listing is bounded


class Secret:
    """A string that never shows itself: ``repr``/``str``/f-strings give ``'******'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('******')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "******"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickled (a kernel's variable inspector, a cache...) with its value
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class Credentials:
    """A username and a :class:`Secret` password for one registry; ``source`` says where they came from."""

    registry: str
    username: str
    password: Secret
    source: str = "given"

    def __repr__(self) -> str:
        return f"<Credentials {self.username}@{self.registry} from {self.source}>"

    def auth_config(self) -> dict[str, str]:
        """The dict docker-py's ``push``/``pull`` take as ``auth_config`` (sent to the engine only)."""
        return {"username": self.username, "password": self.password.reveal(), "serveraddress": self.registry}

    def basic(self) -> tuple[str, str]:
        return (self.username, self.password.reveal())


# in-memory only: registry host -> Credentials
_SESSION: dict[str, Credentials] = {}


def login(registry: str, username: str, password: str | Secret | None = None, *, verify: bool = True,
          timeout: float = 10.0, prompt: Any = None) -> Credentials:
    """Remember credentials for ``registry`` in this process; ask for the password if not given.

    The password is read with ``getpass`` (a password field in Jupyter, nothing echoed), checked
    against the registry (``GET /v2/``) when ``verify``, and kept in memory only.
    """
    host = _host(registry)
    if password is None:
        ask = prompt
        if ask is None:
            import getpass

            ask = getpass.getpass
        password = ask(f"password for {username}@{host}: ")
    secret = password if isinstance(password, Secret) else Secret(str(password))
    if not secret:
        raise AuthError(f"empty password for {username}@{host}", hint="type the password at the prompt")
    creds = Credentials(host, username, secret, source="login")
    if verify:
        Registry(host, credentials=creds, timeout=timeout).ping()
    _SESSION[host] = creds
    return creds


def logout(registry: str) -> bool:
    """Forget this process's credentials for ``registry``."""
    return _SESSION.pop(_host(registry), None) is not None


def credentials(registry: str, auth: Credentials | dict[str, Any] | None = None) -> Credentials | None:
    """The credentials to use for ``registry`` (explicit > :func:`login` > docker config), or None."""
    host = _host(registry)
    if isinstance(auth, Credentials):
        return auth
    if auth:
        pw = auth.get("password")
        return Credentials(host, str(auth.get("username", "")), pw if isinstance(pw, Secret) else Secret(str(pw or "")),
                           source="given")
    if host in _SESSION:
        return _SESSION[host]
    return _from_docker_config(host)


_resolve_credentials = credentials


def _from_docker_config(host: str) -> Credentials | None:
    try:
        from docker import auth as dauth

        cfg = dauth.load_config()
        found = cfg.resolve_authconfig(host)
    except Exception:  # a broken config or helper must not break a push that needs no auth
        return None
    if not found or not found.get("Username") and not found.get("username"):
        return None
    user = found.get("Username") or found.get("username")
    pw = found.get("Password") or found.get("password") or ""
    source = "docker config credential helper" if (cfg.get_credential_store(host)) else "docker config"
    return Credentials(host, str(user), Secret(str(pw)), source=source)


def registry_url(registry: str, engine: Engine | None = None) -> str:
    """``http://`` for loopback, the lab's subnet and registries the engine marks insecure; else ``https://``."""
    host = _host(registry)
    insecure = host.startswith(("127.", "localhost", "[::1]")) or _on_lab_subnet(host)
    if engine is not None and not insecure:
        try:
            cfg = engine.info.get("RegistryConfig", {})
            if cfg.get("IndexConfigs", {}).get(host, {}).get("Secure") is False:
                insecure = True
            else:
                import ipaddress

                ip = ipaddress.ip_address(host.rsplit(":", 1)[0])
                insecure = any(ip in ipaddress.ip_network(c) for c in cfg.get("InsecureRegistryCIDRs", []))
        except Exception:
            insecure = False
    return f"{'http' if insecure else 'https'}://{host}"


def _on_lab_subnet(host: str) -> bool:
    import ipaddress
    import json

    from . import paths

    try:
        state = json.loads((paths.lab_dir() / "lab.json").read_text())
        ip = ipaddress.ip_address(host.rsplit(":", 1)[0])
        return ip in ipaddress.ip_network(state["subnet"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


class Registry:
    """A registry spoken to over its HTTP API v2 (``requests``), every call bounded by ``timeout``.

    Handles Basic auth and the Bearer token dance (``WWW-Authenticate: Bearer realm=…``).
    Listings come back as pandas DataFrames.
    """

    def __init__(self, registry: str, *, credentials: Credentials | dict[str, Any] | None = None,
                 engine: Engine | None = None, timeout: float = 10.0) -> None:
        self.host = _host(registry)
        self.url = registry_url(self.host, engine)
        self.timeout = timeout
        self.creds = _resolve_credentials(self.host, credentials)
        self._token: str | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        who = f" as {self.creds.username}" if self.creds else ""
        return f"<Registry {self.url}{who}>"

    # -- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = (200,), what: str | None = None, **kw: Any) -> requests.Response:
        import requests

        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False  # no proxy from the environment for lab traffic
        hdrs = dict(headers or {})
        what = what or f"{method} {path}"
        for attempt in range(2):  # at most one token refresh
            if self._token:
                hdrs["Authorization"] = f"Bearer {self._token}"
            auth = self.creds.basic() if self.creds and not self._token else None
            try:
                resp = self._session.request(method, self.url + path, headers=hdrs, auth=auth,
                                             timeout=self.timeout, **kw)
            except requests.RequestException as exc:
                raise RegistryError(f"the registry at {self.host} is unreachable ({type(exc).__name__}) while trying to {what}",
                                    hint="check the address and that it runs (`nbops lab status`)",
                                    registry=self.host) from None
            if resp.status_code == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer") and self._fetch_token(challenge):
                    continue
            break
        if resp.status_code == 401:
            who = f"as {self.creds.username} ({self.creds.source})" if self.creds else "without credentials"
            raise AuthError(f"the registry at {self.host} refused {what} {who}: wrong or missing credentials",
                            hint="log in with %nbops registry login REGISTRY --user NAME (the password is asked for)",
                            registry=self.host, status=401)
        if resp.status_code == 403:
            raise AuthError(f"the registry at {self.host} forbids {what}", registry=self.host, status=403)
        if resp.status_code not in ok:
            err = _registry_error_text(resp)
            if resp.status_code == 404:
                raise NotFound(f"the registry at {self.host} has no {what.split(' ', 1)[-1]}: {err}",
                               hint="list what exists: %nbops registry repos / tags REPO", registry=self.host)
            raise RegistryError(f"the registry at {self.host} answered {resp.status_code} to {what}: {err}",
                                registry=self.host, status=resp.status_code)
        return resp

    def _fetch_token(self, challenge: str) -> bool:
        import re

        import requests

        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return False
        auth = self.creds.basic() if self.creds else None
        try:
            resp = requests.get(realm, params=params, auth=auth, timeout=self.timeout)
        except requests.RequestException:
            return False
        if resp.status_code != 200:
            return False
        body = resp.json()
        self._token = body.get("token") or body.get("access_token")
        return bool(self._token)

    # -- API ------------------------------------------------------------------------------------
    def ping(self) -> bool:
        """``GET /v2/``: True when the registry answers and accepts the credentials (AuthError otherwise)."""
        self.request("GET", "/v2/", what="a login check")
        return True

    def repositories(self) -> list[str]:
        return self._paged("/v2/_catalog?n=1000", "repositories", what="the catalog")

    def tags(self, repo: str) -> list[str]:
        return self._paged(f"/v2/{repo}/tags/list?n=1000", "tags", what=f"repository {repo}") or []

    def _paged(self, path: str, key: str, *, what: str) -> list[str]:
        out: list[str] = []
        for _ in range(MAX_PAGES):
            resp = self.request("GET", path, what=f"list {what}")
            out.extend(resp.json().get(key) or [])
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return out
            path = nxt if nxt.startswith("/") else "/" + nxt.split("/", 3)[-1]
        return out

    def manifest(self, repo: str, reference: str) -> tuple[dict[str, Any], str, str]:
        """(manifest JSON, digest, media type) for ``repo:reference`` (a tag or a digest)."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES},
                            what=f"manifest {repo}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if not digest:
            import hashlib

            digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        return resp.json(), digest, resp.headers.get("Content-Type", "")

    def digest(self, repo: str, reference: str) -> str:
        """The manifest digest (``HEAD``, ``Docker-Content-Digest``)."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES},
                            what=f"manifest {repo}:{reference}")
        return resp.headers.get("Docker-Content-Digest", "")

    def exists(self, repo: str, reference: str) -> bool:
        try:
            self.digest(repo, reference)
        except NotFound:
            return False
        return True

    def delete(self, repo: str, reference: str) -> str:
        """Delete the manifest a tag points to (by digest: API v2 deletes manifests, not tags)."""
        digest = reference if reference.startswith("sha256:") else self.digest(repo, reference)
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", ok=(202, 200, 405),
                            what=f"delete {repo}@{digest}")
        if resp.status_code == 405:
            raise RegistryError(f"the registry at {self.host} does not allow deletes",
                                hint="enable storage.delete.enabled in its config", registry=self.host)
        return digest

    # -- DataFrames -----------------------------------------------------------------------------
    def repos_frame(self, *, tags: bool = True) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for repo in self.repositories():
            t = self.tags(repo) if tags else []
            rows.append({"repository": repo, "n_tags": len(t), "tags": ", ".join(sorted(t))})
        return pd.DataFrame(rows, columns=["repository", "n_tags", "tags"])

    def tags_frame(self, repo: str) -> pd.DataFrame:
        """One row per tag: digest, media type, layer count and compressed size as the registry reports."""
        import pandas as pd

        rows = []
        for tag in sorted(self.tags(repo)):
            man, digest, mtype = self.manifest(repo, tag)
            layers = man.get("layers") or []
            rows.append({"repository": repo, "tag": tag, "digest": digest, "media_type": mtype,
                         "n_layers": len(layers), "size": sum(int(x.get("size", 0)) for x in layers)
                         + int((man.get("config") or {}).get("size", 0))})
        return pd.DataFrame(rows, columns=["repository", "tag", "digest", "media_type", "n_layers", "size"])

    def layers_frame(self, repo: str, reference: str) -> pd.DataFrame:
        """The manifest's layers: digest, media type, size (compressed, as stored) in order."""
        import pandas as pd

        man, digest, _ = self.manifest(repo, reference)
        if man.get("mediaType") in INDEX_TYPES or "manifests" in man:
            raise RegistryError(f"{repo}:{reference} is a multi-platform index",
                                hint="pass one platform's manifest digest", registry=self.host)
        rows = [{"index": i, "digest": x.get("digest"), "media_type": x.get("mediaType"), "size": int(x.get("size", 0))}
                for i, x in enumerate(man.get("layers") or [])]
        return pd.DataFrame(rows, columns=["index", "digest", "media_type", "size"])


def _registry_error_text(resp: Any) -> str:
    try:
        errs = resp.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs) or resp.reason
    except ValueError:
        return resp.reason or str(resp.status_code)


def _host(registry: str) -> str:
    host = registry.split("://", 1)[-1].split("/", 1)[0]
    if not host:
        raise ConfigError(f"no registry host in {registry!r}", hint="use HOST:PORT, e.g. 10.1.2.1:5000")
    return host


def split_ref(ref: str) -> tuple[str, str, str]:
    """``REGISTRY/REPO:TAG`` or ``REGISTRY/REPO@DIGEST`` -> (registry, repo, tag-or-digest)."""
    first, sep, rest = ref.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        raise ConfigError(f"{ref} names no registry", hint="use REGISTRY/REPO:TAG, e.g. 10.1.2.1:5000/app:1")
    if "@" in rest:
        repo, reference = rest.split("@", 1)
    else:
        last = rest.rsplit("/", 1)[-1]
        repo, reference = (rest.rsplit(":", 1) if ":" in last else (rest, "latest"))
    return first, repo, reference


def wait_ready(registry: str, *, timeout: float = 20.0) -> None:
    """Wait (bounded) until a registry answers ``/v2/`` at all (401 counts as up)."""
    import requests

    url = registry_url(registry) + "/v2/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RegistryError(f"the registry at {registry} did not answer within {timeout:.0f}s", registry=registry)


__all__ = ["Secret", "Credentials", "login", "logout", "credentials", "Registry", "registry_url", "split_ref",
           "wait_ready"]

"""Builds, with a per-instruction profile: duration, cache hit, layer id, layer size, cumulative size.

Two builders, one result:

* ``buildkit`` — the docker CLI with BuildKit (a CLI < 23 has it built in, newer ones need buildx),
  ``--progress=plain``: each step's duration (``#5 DONE 0.2s``) or ``#5 CACHED``. 5–30× faster than
  the legacy builder here (ENGINE-NOTES.md). Supports build secrets.
* ``legacy`` — the engine's classic builder through the docker SDK (``Step k/n``, ``Using cache``).

Layer sizes and ids come from the image's history on both paths, so the profile is equally complete.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import history as _history
from ._display import card, frame_html, human_size, human_time
from .engine import Engine, close_response, stream_response
from .errors import BuildError, ConfigError, DockerfileError, EngineError, EngineHung
from .progress import Progress

# instructions that produce a filesystem layer; the others only change the image config
LAYER_INSTRUCTIONS = {"RUN", "COPY", "ADD"}


@dataclass
class BuildStep:
    step: int
    stage: str | None
    instruction: str
    duration_s: float | None = None
    cached: bool | None = None
    layer_id: str | None = None
    layer_size: int | None = None
    cumulative_size: int | None = None
    in_final: bool | None = None  # the step belongs to the stage that became the image


@dataclass
class BuildResult:
    """What ``%build`` returns: the image, how it was built, and the profile (``to_frame()``)."""

    name: str | None
    tags: list[str]
    image_id: str
    builder: str
    duration_s: float
    steps: list[BuildStep]
    size: int
    n_layers: int
    dockerfile_sha: str
    log: list[str] = field(default_factory=list, repr=False)
    build_id: int | None = None
    squashed: SquashResult | None = None
    reused: bool = False  # no build ran: an earlier build had the same inputs and its image is still present
    reused_from: int | None = None  # that build's id in the history store

    def __repr__(self) -> str:
        cached = sum(1 for s in self.steps if s.cached)
        tag = self.tags[0] if self.tags else self.image_id[:19]
        sq = f", squashed to {human_size(self.squashed.size_after)} {self.squashed.layers_after} layers" \
            if self.squashed else ""
        if self.reused:
            sq += ", reused: inputs unchanged" + (f" since build #{self.reused_from}" if self.reused_from else "")
        return (f"<BuildResult {tag} {self.image_id[7:19]} {human_size(self.size)} {self.n_layers} layers, "
                f"{len(self.steps)} steps ({cached} cached) in {human_time(self.duration_s)} via {self.builder}{sq}>")

    def to_frame(self):
        import pandas as pd

        cols = [f for f in BuildStep.__dataclass_fields__]
        return pd.DataFrame([asdict(s) for s in self.steps], columns=cols)

    def _repr_html_(self) -> str:
        df = self.to_frame()
        df["duration"] = df["duration_s"].map(human_time)
        df["layer"] = df["layer_size"].map(lambda v: human_size(v) if v is not None and v == v else "")
        view = df[["step", "stage", "instruction", "duration", "cached", "layer"]]
        facts = {"image": self.image_id[7:19], "tags": ", ".join(self.tags) or "-", "size": human_size(self.size),
                 "layers": self.n_layers, "time": human_time(self.duration_s), "builder": self.builder}
        if self.reused:
            facts["reused"] = f"inputs unchanged since build #{self.reused_from}" if self.reused_from else "inputs unchanged"
        if self.squashed:
            facts["squashed"] = (f"{self.squashed.image_id[7:19]}: {human_size(self.squashed.size_after)}, "
                                 f"{self.squashed.layers_after} layers")
        return card("build", facts, frame_html(view))

    def plot(self, ax: Any = None):
        from . import plot

        return plot.build_profile(self.to_frame(), ax=ax)


def build(
    source: str,
    tags: Sequence[str] = (),
    *,
    engine: Engine | None = None,
    name: str | None = None,
    context: str | os.PathLike[str] | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    buildargs: Mapping[str, str] | None = None,
    target: str | None = None,
    labels: Mapping[str, str] | None = None,
    nocache: bool = False,
    pull: bool = False,
    secrets: Mapping[str, str | os.PathLike[str]] | None = None,
    builder: str = "auto",
    history: _history.History | None = None,
    timeout: float = 1800,
    progress: str | None = None,
    squash: bool = False,
    stall_timeout: float = 120,
    reuse: bool = True,
) -> BuildResult:
    """Build the Dockerfile text ``source`` and return its profile.

    ``context`` is a directory sent as the build context (default: an empty one); ``files`` maps
    names in the context to local files to add. ``secrets`` maps a secret id to a file (BuildKit only;
    the secret is mounted during ``RUN --mount=type=secret,id=…`` and never stored in the image).
    ``squash`` merges the layers the Dockerfile added into one (the base image's layers stay shared)
    and points ``tags`` at the squashed image (see :func:`squash`).
    ``stall_timeout``: after that many seconds without build output the engine is pinged; if it
    does not answer within its timeout the build is stopped with :class:`EngineHung` (a step that is
    merely silent, on an engine that answers, runs on up to ``timeout``).
    ``reuse``: when an earlier build had exactly these inputs (Dockerfile, args, target, labels, base
    image ids, context files unchanged since) and its image is still on the engine, tag that image and return its
    profile with every step cached, without starting the builder (see ``_input_key``).
    """
    engine = engine or Engine.connect()
    # the docker CLI waits forever on a hung engine: make sure it answers within engine.timeout first
    engine.call("reach the engine before the build", engine.api.ping)
    if builder not in ("auto", "buildkit", "legacy"):
        raise ConfigError(f"unknown builder {builder!r}", hint="use auto, buildkit or legacy")
    if not source.strip():
        raise BuildError("the Dockerfile is empty", hint="write a %%dockerfile cell first")
    _preflight(source, engine)
    cli = _cli(engine)
    use_buildkit = builder == "buildkit" or (builder == "auto" and cli.buildkit)
    if builder == "buildkit" and not cli.buildkit:
        raise ConfigError("no docker CLI with BuildKit found", hint="install Debian's docker.io or docker buildx")
    if secrets and not use_buildkit:
        raise ConfigError("build secrets need BuildKit", hint="use --builder buildkit (the legacy builder would bake them into a layer)")

    store = history or _history.default()
    dockerfile_sha = hashlib.sha256(source.encode()).hexdigest()
    t0 = time.monotonic()
    key: str | None = None
    keying = None
    if reuse and not (pull or squash):
        if nocache:  # nothing to reuse, but remember what this build makes; hash beside the build
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=1)
            keying = pool.submit(_input_key, engine, source, context, files, buildargs, target, labels, secrets,
                                 use_buildkit)
            pool.shutdown(wait=False)
        else:
            key = _input_key(engine, source, context, files, buildargs, target, labels, secrets, use_buildkit)
            hit = _reusable(engine, key, dockerfile_sha, store) if key else None
            done = _reuse(engine, hit, key, tags, name, dockerfile_sha, store, t0, buildargs, target, labels) \
                if hit else None
            if done is not None:
                return done

    ctx_tmp = None
    if context is None or files:
        ctx_tmp = Path(tempfile.mkdtemp(prefix="nbops-ctx-"))
        if context is not None:
            shutil.copytree(context, ctx_tmp, symlinks=True, dirs_exist_ok=True)
        for dest, src in (files or {}).items():
            target_path = ctx_tmp / dest
            target_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target_path)
        context = ctx_tmp
    ctx = Path(context)
    if not ctx.is_dir():
        raise ConfigError(f"build context {ctx} is not a directory", hint="pass --context DIR with an existing directory")
    redact = _redactor(secrets, buildargs)
    try:
        if use_buildkit:
            try:
                image_id, obs, log = _build_buildkit(engine, source, ctx, tags, buildargs, target, labels, nocache,
                                                       pull, secrets, timeout, progress, redact, stall_timeout)
            except BuildError as err:
                # BuildKit in engine 20.10 ignores insecure registries given as CIDRs (the lab's): a base
                # that is not local yet is pulled by the engine itself, then the build runs once more
                if pull or not any(_HTTPS_TO_HTTP in line for line in err.data.get("build_log") or []):
                    raise
                _pull_bases(engine, source, buildargs, target)
                image_id, obs, log = _build_buildkit(engine, source, ctx, tags, buildargs, target, labels, nocache,
                                                       pull, secrets, timeout, progress, redact, stall_timeout)
            used = "buildkit"
        else:
            image_id, obs, log = _build_legacy(engine, source, ctx, tags, buildargs, target, labels, nocache,
                                                 pull, timeout, progress, redact, stall_timeout)
            used = "legacy"
    except (BuildError, EngineHung) as err:
        _record_failure(history, name, tags, dockerfile_sha, "buildkit" if use_buildkit else "legacy", engine,
                        time.monotonic() - t0, err)
        raise
    finally:
        if ctx_tmp is not None:
            shutil.rmtree(ctx_tmp, ignore_errors=True)
    duration = time.monotonic() - t0
    attrs, hist = _inspect_with_history(engine, image_id)
    steps = _profile(obs, used, source, target, hist, attrs.get("RootFS", {}).get("Layers", []))
    if used == "legacy":
        _legacy_layer_ids(engine, steps, obs)
    result = BuildResult(name=name, tags=list(tags), image_id=attrs["Id"], builder=used, duration_s=duration,
                         steps=steps, size=int(attrs.get("Size") or 0),
                         n_layers=len(attrs.get("RootFS", {}).get("Layers", [])),
                         dockerfile_sha=dockerfile_sha, log=log)
    if squash:
        result.squashed = _squash(engine, attrs["Id"], tags=tags, source=source, target=target, buildargs=buildargs)
    if keying is not None:
        try:
            key = keying.result()
        except Exception:  # keying is an optimisation: a build never fails because of it
            key = None
    _record_success(store, result, engine, {
        "target": target, "buildargs": sorted((buildargs or {}).keys()), "nocache": nocache, "pull": pull,
        "labels": dict(labels or {}), "squashed": result.squashed.summary() if result.squashed else None,
        "input_key": key})
    _remember(engine, key, result.image_id, result.build_id, steps, used)
    return result


# image id -> (inspect subset, history): an id is the digest of the image config, so what it names never
# changes; a warm rebuild that yields the same image skips two engine round trips
_IMAGE_META: dict[tuple[str, str], tuple[dict, list[dict]]] = {}


def _inspect_with_history(engine: Engine, image_id: str) -> tuple[dict, list[dict]]:
    """The image's id, size, layers and history (fetched side by side; remembered per image id)."""
    from concurrent.futures import ThreadPoolExecutor

    key = (engine.address, image_id)
    if key in _IMAGE_META:
        return _IMAGE_META[key]
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(engine.call, "read the image history", engine.api.history, image_id)
        attrs = engine.call("inspect the built image", engine.api.inspect_image, image_id)
        hist = later.result()
    if len(_IMAGE_META) >= 256:
        _IMAGE_META.pop(next(iter(_IMAGE_META)))
    keep = {"Id": attrs["Id"], "Size": attrs.get("Size"), "RootFS": {"Layers": attrs.get("RootFS", {}).get("Layers", [])}}
    _IMAGE_META[key] = (keep, hist)
    return keep, hist


@dataclass
class SquashResult:
    """An image squashed: what it was and what it became (size and layer count before/after)."""

    source_id: str
    image_id: str
    tags: list[str]
    size_before: int
    size_after: int
    layers_before: int
    layers_after: int
    base_layers: int  # layers kept as they were (shared with the base image)
    duration_s: float

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"image": "before", "id": self.source_id, "size": self.size_before,
                              "layers": self.layers_before},
                             {"image": "squashed", "id": self.image_id, "size": self.size_after,
                              "layers": self.layers_after}])

    def __repr__(self) -> str:
        return (f"<SquashResult {self.image_id[7:19]}: {human_size(self.size_before)} {self.layers_before} layers -> "
                f"{human_size(self.size_after)} {self.layers_after} layers ({self.base_layers} base layers kept) "
                f"in {human_time(self.duration_s)}>")

    def _repr_html_(self) -> str:
        facts = {"before": f"{human_size(self.size_before)}, {self.layers_before} layers",
                 "after": f"{human_size(self.size_after)}, {self.layers_after} layers",
                 "base layers kept": self.base_layers, "time": human_time(self.duration_s)}
        return card("squash", facts)


def squash(engine: Engine, image: str, *, tags: Sequence[str] = (), base: str | None = None,
           source: str | None = None, target: str | None = None, buildargs: Mapping[str, str] | None = None,
           keep_base: bool = True) -> SquashResult:
    """Merge the layers an image added on top of its base into one, keeping its config (CMD, ENV,
    HEALTHCHECK, labels...). Engine 20.10's own ``--squash`` needs experimental mode; this uses the
    docker-squash library (save → merge layer tars honouring whiteouts → load).

    The base is ``base``, else the final stage's FROM in ``source``; its layers stay untouched so
    images built on it still share them (``keep_base=False`` squashes everything into one layer).
    """
    import logging

    from docker_squash.errors import SquashError, SquashUnnecessaryError
    from docker_squash.squash import Squash

    t0 = time.monotonic()
    before = engine.call(f"inspect image {image}", engine.api.inspect_image, image)
    layers = before.get("RootFS", {}).get("Layers", [])
    hist = engine.call("read the image history", engine.api.history, before["Id"])
    if base is None and source is not None and keep_base:
        from .dockerfile import parse

        st = parse(source, buildargs).stage(target)
        if st is not None and not st.from_stage and st.base_resolved != "scratch":
            base = st.base_resolved
    n_base_layers, n_entries = 0, len(hist)
    if base is not None and keep_base:
        b = engine.call(f"inspect the base image {base}", engine.api.inspect_image, base)
        b_layers = b.get("RootFS", {}).get("Layers", [])
        if layers[: len(b_layers)] == b_layers:
            n_base_layers = len(b_layers)
            n_entries = len(hist) - len(engine.call("read the base history", engine.api.history, b["Id"]))
    log = logging.getLogger("nbops.squash")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    first = tags[0] if tags else None
    new_id = before["Id"]
    if len(layers) - n_base_layers > 1 and n_entries > 1:
        try:
            new_id = Squash(log=log, image=before["Id"], docker=engine.api, tag=first, from_layer=n_entries,
                            comment="squashed by nbops").run()
        except SquashUnnecessaryError:
            pass
        except SquashError as exc:
            raise BuildError(f"squashing {image} failed: {exc}", hint="build without --squash") from exc
        except Exception as exc:
            from .engine import translate

            raise translate(exc, engine.address, "squash the image") from exc
    after = engine.call("inspect the squashed image", engine.api.inspect_image,
                        new_id if str(new_id).startswith("sha256:") else f"sha256:{new_id}")
    for t in tags:
        engine.call("tag the squashed image", engine.api.tag, after["Id"], *_split_tag(t))
    return SquashResult(before["Id"], after["Id"], list(tags), int(before.get("Size") or 0), int(after.get("Size") or 0),
                        len(layers), len(after.get("RootFS", {}).get("Layers", [])), n_base_layers,
                        time.monotonic() - t0)


_squash = squash  # build()'s `squash` flag shadows the function's name there

_CLIS: dict[str, Any] = {}
REDACTED = "[secret hidden by nbops]"


def _redactor(secrets: Mapping[str, str | os.PathLike[str]] | None, buildargs: Mapping[str, str] | None):
    """A function hiding secret values in build output: the content of every secret file, and the
    values of build args whose names look secret (TOKEN, PASSWORD...), which BuildKit echoes in step names."""
    from .dockerfile import _SECRET_NAME

    values: set[str] = set()
    for src in (secrets or {}).values():
        try:
            data = Path(src).read_bytes()[: 1 << 16].decode("utf-8", "replace")
        except OSError:
            continue
        values |= {v for v in (data, data.strip(), *data.splitlines()) if len(v.strip()) >= 4}
    for key, value in (buildargs or {}).items():
        if _SECRET_NAME.search(key) and len(value) >= 4:
            values.add(value)
    ordered = sorted(values, key=len, reverse=True)
    if not ordered:
        return lambda text: text

    def redact(text: str) -> str:
        for v in ordered:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    return redact


def _cli(engine: Engine) -> Any:
    """The engine's docker CLI, probed once per address (the probe runs `docker version`)."""
    cli = _CLIS.get(engine.address)
    if cli is None:
        cli = _CLIS[engine.address] = engine.cli()
    return cli


def _preflight(source: str, engine: Engine) -> None:
    """Stop before the engine does, with the line: syntax errors, heredocs the engine cannot read."""
    from .dockerfile import check_syntax, mask_heredocs

    check_syntax(source)
    if "<<" in source:
        docs = mask_heredocs(source)[1]
        if docs and not re.match(r"\s*#\s*syntax\s*=", source):
            version = str(engine.version.get("Version") or "0")
            major = int(re.match(r"\d*", version).group(0) or 0)
            if major < 23:
                raise DockerfileError(
                    f"line {docs[0].line}: heredoc ({docs[0].instruction} <<{docs[0].delimiter}) is not understood by "
                    f"engine {version}'s built-in Dockerfile frontend",
                    hint="write `RUN set -e; cmd1; cmd2` (or COPY a script) instead", line=docs[0].line)


def _record_success(store: _history.History, result: BuildResult, engine: Engine, meta: dict[str, Any]) -> None:
    """One builds row and its steps, in one transaction; sets ``result.build_id``."""
    result.build_id = store.record(
        "builds",
        {"ts": time.time(), "run_id": _history.current_run_id(), "name": result.name, "tags": list(result.tags),
         "image_id": result.image_id, "dockerfile_sha": result.dockerfile_sha, "builder": result.builder,
         "engine": engine.address, "duration_s": result.duration_s, "size": result.size,
         "n_layers": result.n_layers, "ok": True, "meta": meta},
        {"build_steps": [dict(vars(s)) for s in result.steps]},  # vars(): asdict's deep copy costs ms per build
    )


def _record_failure(history, name, tags, sha, builder, engine, duration, err) -> None:
    try:
        (history or _history.default()).record(
            "builds",
            {"ts": time.time(), "run_id": _history.current_run_id(), "name": name, "tags": list(tags),
             "dockerfile_sha": sha, "builder": builder, "engine": engine.address, "duration_s": duration,
             "ok": False, "error": err.message},
        )
    except Exception:  # recording must never hide the build error
        pass


# -- BuildKit through the CLI ------------------------------------------------------------------------
# "[build 2/3]", "[2/3]", and padded when there are 10 steps or more: "[ 2/41]", "[stage-1  2/12]"
_BK_HEADER = re.compile(r"^#(\d+) \[(?:(?P<stage>[^\]\s]+) +)?\s*(?P<k>\d+)/(?P<n>\d+)\] (?P<text>.*)$")
_BK_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
_BK_CACHED = re.compile(r"^#(\d+) CACHED$")
_BK_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_BK_OUTPUT = re.compile(r"^#(\d+) \d+(?:\.\d+)? (.*)$")
_EXIT_CODE = re.compile(r"exit code: (\d+)")


def _build_buildkit(engine, source, ctx, tags, buildargs, target, labels, nocache, pull, secrets, timeout, progress,
                    redact=lambda s: s, stall_timeout=120.0):
    cli = _cli(engine)
    # the CLI's own temporary files (the Dockerfile read from stdin) go to a directory of this build,
    # removed however the build ends: a CLI killed by the watchdog or an interrupt cannot clean up
    work = Path(tempfile.mkdtemp(prefix="nbops-build-"))
    try:
        return _run_buildkit_cli(engine, cli, work, source, ctx, tags, buildargs, target, labels, nocache, pull,
                                 secrets, timeout, progress, redact, stall_timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_buildkit_cli(engine, cli, work, source, ctx, tags, buildargs, target, labels, nocache, pull, secrets,
                      timeout, progress, redact, stall_timeout):
    iidfile = work / "iid"
    args = ["build", "--progress=plain", "--iidfile", str(iidfile), "-f", "-"]
    for t in tags:
        args += ["-t", t]
    for k, v in (buildargs or {}).items():
        args += ["--build-arg", f"{k}={v}"]
    for k, v in (labels or {}).items():
        args += ["--label", f"{k}={v}"]
    for sid, src in (secrets or {}).items():
        if not Path(src).is_file():
            raise ConfigError(f"secret {sid!r}: no file {src}", hint="pass --secret id=NAME,src=EXISTING_FILE")
        args += ["--secret", f"id={sid},src={src}"]
    if target:
        args += ["--target", target]
    if nocache:
        args.append("--no-cache")
    if pull:
        # BuildKit in engine 20.10 ignores insecure-registries given as CIDRs (the lab's), so the
        # engine's own pull refreshes the bases and BuildKit then finds them up to date locally
        _pull_bases(engine, source, buildargs, target, log_to=None)
    args.append(str(ctx))
    n_steps = _count_steps(source, target)
    vertices: dict[int, dict[str, Any]] = {}
    log: list[str] = []
    proc = subprocess.Popen([cli.path or "docker", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=cli.env(DOCKER_BUILDKIT="1", TMPDIR=str(work)), text=True,
                            bufsize=1)
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(source)
        proc.stdin.close()
        # the CLI waits forever on an engine that hangs mid-build: the watchdog kills it
        with Progress("build", total=n_steps or None, unit="step", requested=progress) as bar, \
                _Watchdog(engine, stall_timeout, deadline, proc.kill, log) as watch:
            for line in proc.stdout:
                watch.beat()
                line = redact(line.rstrip("\n"))
                log.append(line)
                if time.monotonic() > deadline:
                    proc.kill()
                    raise BuildError(f"the build ran past its timeout of {timeout:.0f} s", build_log=log)
                if m := _BK_HEADER.match(line):
                    vid = int(m.group(1))
                    vertices.setdefault(vid, {"stage": m.group("stage"), "k": int(m.group("k")),
                                              "text": m.group("text"), "output": []})
                elif m := _BK_DONE.match(line):
                    v = vertices.get(int(m.group(1)))
                    if v is not None and "duration" not in v:
                        v["duration"] = float(m.group(2))
                        v.setdefault("cached", False)
                        bar.update(1, note=v["text"])
                elif m := _BK_CACHED.match(line):
                    v = vertices.get(int(m.group(1)))
                    if v is not None:
                        v["cached"], v["duration"] = True, 0.0
                        bar.update(1, note="CACHED " + v["text"])
                elif m := _BK_ERROR.match(line):
                    v = vertices.get(int(m.group(1)))
                    if v is not None:
                        v["error"] = m.group(2)
                elif m := _BK_OUTPUT.match(line):
                    v = vertices.get(int(m.group(1)))
                    if v is not None:
                        v["output"].append(m.group(2))
        watch.check(timeout)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BuildError(f"the build ran past its timeout of {timeout:.0f} s", build_log=log) from None
    finally:
        if proc.poll() is None:
            proc.kill()
    image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    if rc != 0 or not image_id:
        raise _buildkit_error(vertices, log, engine.address)
    return image_id, list(vertices.values()), log


def _pull_bases(engine: Engine, source: str, buildargs, target, log_to=None) -> list[str]:
    """Pull every base image the build needs (stages' FROM, not scratch or other stages)."""
    from .dockerfile import parse

    st = parse(source, buildargs)
    final = st.stage(target) if target else None
    stages = st.stages[: final.index + 1] if final is not None else st.stages
    pulled = []
    for ref in dict.fromkeys(s.base_resolved for s in stages if not s.from_stage):
        if ref == "scratch" or "$" in ref:
            continue
        repo, tag = _split_tag(ref.split("@")[0])
        try:
            engine.call(f"pull the base image {ref}", engine.api.pull, repo, tag=tag or "latest")
        except EngineError as err:
            raise BuildError(f"--pull: cannot pull the base image {ref}: {err.message}",
                             hint="check the registry is reachable, or build without --pull") from err
        pulled.append(ref)
    return pulled


def _buildkit_error(vertices, log, address) -> BuildError:
    failed = [v for v in vertices.values() if "error" in v]
    if failed:
        v = failed[0]
        code = _EXIT_CODE.search(v["error"])
        tail = v["output"][-10:]
        where = f"[{v['stage'] + ' ' if v['stage'] else ''}{v['k']}] {v['text']}"
        msg = f"step {where} failed" + (f" with exit code {code.group(1)}" if code else f": {v['error']}")
        last = next((t for t in reversed(tail) if t.strip()), None)
        if last:
            msg += f"; last output: {last.strip()[:200]}"
        return BuildError(msg, hint="the output tail and the build log are on the error (%nbops error shows them)",
                          step=where,
                          exit_code=int(code.group(1)) if code else None, output_tail=tail, build_log=log)
    errors = [line for line in log if line.startswith(("error:", "ERROR:", "failed to", "Error"))]
    text = errors[-1] if errors else (log[-1] if log else "the docker CLI failed")
    line_no = re.search(r"line (\d+)", text)
    if "Cannot connect" in text or "connection refused" in text.lower():
        return BuildError(f"no Docker engine answers at {address}", hint="start the lab with `nbops lab up`",
                          build_log=log)
    return BuildError(f"the build failed: {text}", hint="fix the Dockerfile" + (f" at line {line_no.group(1)}" if line_no else ""),
                      build_log=log, line=int(line_no.group(1)) if line_no else None)


def _count_steps(source: str, target: str | None) -> int:
    """How many BuildKit steps (FROM/RUN/COPY/ADD/WORKDIR) the Dockerfile has, roughly, for the bar."""
    n = 0
    for line in _logical_lines(source):
        word = line.split(None, 1)[0].upper() if line.split() else ""
        if word in ("FROM", "RUN", "COPY", "ADD", "WORKDIR"):
            n += 1
    return n


def _logical_lines(source: str) -> Iterable[str]:
    buf = ""
    for raw in source.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        yield buf + s
        buf = ""
    if buf:
        yield buf


# -- the legacy builder through the SDK ---------------------------------------------------------------
_HTTPS_TO_HTTP = "server gave HTTP response to HTTPS client"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def _build_legacy(engine, source, ctx, tags, buildargs, target, labels, nocache, pull, timeout, progress,
                  redact=lambda s: s, stall_timeout=120.0):
    dockerfile = ".nbops.Dockerfile"
    (ctx / dockerfile).write_text(source)
    steps: list[BuildStep] = []
    log: list[str] = []
    image_id = None
    error = None
    t_step = time.monotonic()
    deadline = t_step + timeout
    try:
        stream = engine.call("start a build", engine.api.build, path=str(ctx), dockerfile=dockerfile,
                             tag=tags[0] if tags else None, buildargs=dict(buildargs or {}), target=target,
                             labels=dict(labels or {}), nocache=nocache, pull=pull, forcerm=True, rm=True,
                             decode=True, timeout=timeout)
        response = stream_response(stream)
        with Progress("build", total=None, unit="step", requested=progress) as bar, \
                _Watchdog(engine, stall_timeout, deadline, lambda: close_response(response), log) as watch:
            try:
                for chunk in _guarded(engine, stream):
                    watch.beat()
                    if "stream" in chunk:
                        for line in redact(chunk["stream"]).splitlines():
                            log.append(line)
                            if m := _LEGACY_STEP.match(line):
                                now = time.monotonic()
                                if steps:
                                    steps[-1].duration_s = now - t_step
                                t_step = now
                                bar.set_total(int(m.group(2)))
                                steps.append(BuildStep(step=int(m.group(1)), stage=None, instruction=m.group(3),
                                                       cached=False))
                                bar.update(1, note=m.group(3))
                            elif "Using cache" in line and steps:
                                steps[-1].cached = True
                            elif line.startswith(" ---> ") and steps and not line.startswith(" ---> Running"):
                                steps[-1].layer_id = line[6:].strip()
                    elif "aux" in chunk and "ID" in chunk["aux"]:
                        image_id = chunk["aux"]["ID"]
                    elif "error" in chunk or "errorDetail" in chunk:
                        error = redact(chunk.get("error") or chunk["errorDetail"].get("message") or "")
                        log.append(error)
            except KeyboardInterrupt:
                close_response(response)  # dockerd cancels a build whose client hung up
                raise
            except EngineError:
                watch.check(timeout)
                raise
            watch.check(timeout)
        if steps:
            steps[-1].duration_s = time.monotonic() - t_step
    finally:
        (ctx / dockerfile).unlink(missing_ok=True)
    if error or not image_id:
        failed = steps[-1] if steps else None
        code = _EXIT_CODE.search(error or "") or re.search(r"returned a non-zero code: (\d+)", error or "")
        starts = [i for i, t in enumerate(log) if _LEGACY_STEP.match(t)]
        own = log[starts[-1] + 1:] if starts else log
        own = [_ANSI.sub("", t) for t in own]  # the classic builder colours a failing step's stderr
        tail = [t for t in own if t.strip() and t != error and not t.startswith((" ---> ", "Removing "))][-10:]
        last = f"; last output: {tail[-1].strip()[:200]}" if failed and tail else ""
        raise BuildError(
            f"step {failed.step} ({failed.instruction}) failed: {error}{last}" if failed else f"the build failed: {error}",
            hint="the output tail and the build log are on the error (%nbops error shows them)",
            step=failed.instruction if failed else None,
            exit_code=int(code.group(1)) if code else None, output_tail=tail, build_log=log)
    for t in tags[1:]:
        engine.call("tag the image", engine.api.tag, image_id, *_split_tag(t))
    obs = [{"k": s.step, "text": s.instruction.split(None, 1)[0].upper() if s.instruction else "",
            "duration": s.duration_s, "cached": s.cached, "image": s.layer_id} for s in steps]
    return image_id, obs, log


class _Watchdog:
    """Watches a build stream from a thread. After ``stall`` s without output it pings the engine:
    no answer within the engine's timeout (or the build's deadline passed) calls ``abort`` (kill the
    CLI, hang up on the stream) and remembers why; :meth:`check` then raises the clear error.
    An engine that answers lets a silent step run on (a long ``RUN sleep`` is not a hang)."""

    def __init__(self, engine: Engine, stall: float, deadline: float, abort: Any, log: list[str]) -> None:
        self.engine, self.stall, self.deadline, self.abort, self.log = engine, stall, deadline, abort, log
        self.reason: str | None = None
        self.silent_s = 0.0
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbops-build-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()  # a ping in flight ends on its own (bounded by the engine timeout)

    def beat(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._done.wait(max(0.2, min(1.0, self.stall / 4))):
            now = time.monotonic()
            if now > self.deadline:
                return self._trip("timeout")
            silent = now - self._last
            if silent < self.stall:
                continue
            try:
                self.engine.call("answer a ping during a silent build step", self.engine.api.ping)
            except EngineError:
                self.silent_s = time.monotonic() - self._last
                return self._trip("hung")
            self.log.append(f"nbops: no build output for {silent:.0f} s; the engine answers a ping, still waiting")
            self._last = time.monotonic()

    def _trip(self, reason: str) -> None:
        if not self._done.is_set():
            self.reason = reason
            self.abort()

    def check(self, timeout: float) -> None:
        if self.reason == "hung":
            raise EngineHung(
                f"the Docker engine at {self.engine.address} stopped answering in the middle of the build: no build "
                f"output for {self.silent_s:.0f} s and no answer to a ping within {self.engine.timeout:.0f} s; "
                "the build was stopped",
                hint="check the daemon (nbops doctor; in the lab: nbops lab status), restart it if it is stuck, "
                     "then build again", address=self.engine.address, build_log=self.log)
        if self.reason == "timeout":
            raise BuildError(f"the build ran past its timeout of {timeout:.0f} s", build_log=self.log)


def _guarded(engine: Engine, stream: Iterable[dict]) -> Iterable[dict]:
    try:
        yield from stream
    except EngineError:
        raise
    except Exception as exc:
        from .engine import translate

        raise translate(exc, engine.address, "stream the build") from exc


def _split_tag(ref: str) -> tuple[str, str | None]:
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, None
    return name, tag


# -- the profile: Dockerfile instructions joined with what the builder reported and the image history --
_VERTEX_KINDS = ("FROM", "RUN", "COPY", "ADD", "WORKDIR")  # BuildKit's [k/n] counts only these
_BK_LAYER_KINDS = ("RUN", "COPY", "ADD", "WORKDIR")


def _stages(source: str) -> tuple[list[dict], list[tuple[str, list[dict]]]]:
    """(global instructions, [(stage label, instructions incl. its FROM)]) — heredoc bodies masked."""
    from .dockerfile import parse

    st = parse(source)
    glob: list[dict] = []
    stages: list[tuple[str, list[dict]]] = []
    for ins in st.instructions:
        if ins["instruction"] == "COMMENT":
            continue
        if ins["instruction"] == "FROM":
            stage = st.stages[len(stages)]
            stages.append((stage.name or f"stage-{stage.index}", [ins]))
        elif stages:
            stages[-1][1].append(ins)
        else:
            glob.append(ins)
    return glob, stages


def _text(ins: dict) -> str:
    return " ".join(f"{ins['instruction']} {ins['value']}".split())


def _profile(obs: list[dict], builder: str, source: str, target: str | None, hist: list[dict],
             diff_ids: list[str]) -> list[BuildStep]:
    """One row per instruction of every stage that was built, final-stage rows with their layers.

    ``obs`` is what the builder reported: BuildKit vertices ``{stage, k, duration, cached}`` or legacy
    steps ``{k, duration, cached, layer_id}``. Instruction texts are the Dockerfile's, as written.
    """
    glob, stages = _stages(source)
    if not stages:
        return []
    labels = [label for label, _ in stages]
    final_idx = labels.index(target) if target in labels else len(stages) - 1
    seen: dict[tuple[int, int], dict] = {}  # (stage index, instruction index) -> observation
    if builder == "buildkit":
        for v in obs:
            if v.get("stage") is None:
                si = final_idx if len(stages) > 1 else 0
            elif v["stage"] in labels:
                si = labels.index(v["stage"])
            else:
                continue
            kinds = [i for i, ins in enumerate(stages[si][1]) if ins["instruction"] in _VERTEX_KINDS]
            if 0 < v["k"] <= len(kinds):
                seen[(si, kinds[v["k"] - 1])] = v
    else:
        flat = [(-1, i) for i in range(len(glob))] + [(si, i) for si, (_, ins) in enumerate(stages)
                                                          for i in range(len(ins))]
        for v in obs:
            if 0 < v["k"] <= len(flat):
                si, i = flat[v["k"] - 1]
                ins = glob[i] if si < 0 else stages[si][1][i]
                # --label adds a trailing `LABEL` step of its own: match keywords, not only positions
                if (v.get("text") or "").split(None, 1)[:1] == [ins["instruction"]] or not v.get("text"):
                    seen[(si, i)] = v
    built = {si for si, _ in seen if si >= 0} | {final_idx}
    if builder == "legacy":  # the classic builder runs every stage up to the target
        built |= set(range(final_idx + 1))
    rows: list[BuildStep] = []
    for si in sorted(built):
        label, instrs = stages[si]
        for i, ins in enumerate(instrs):
            v = seen.get((si, i), {})
            rows.append(BuildStep(step=0, stage=label, instruction=_text(ins), duration_s=v.get("duration"),
                                  cached=v.get("cached"), in_final=si == final_idx))
            v["row"] = rows[-1]
    final_rows = [r for r in rows if r.in_final]
    _attach_layers(final_rows, hist, diff_ids, builder)
    # final stage last, so the cumulative size reads top to bottom
    rows = [r for r in rows if not r.in_final] + final_rows
    for n, r in enumerate(rows, start=1):
        r.step = n
    return rows


def _attach_layers(rows: list[BuildStep], hist: list[dict], diff_ids: list[str], builder: str) -> None:
    """Give the final stage's rows (FROM first) their history entry: layer size, cumulative size, id.

    The history lists, oldest first, the base image's entries then one per instruction of the final
    stage (ARG included, on both builders); the rows are aligned from the end and each pairing is
    checked by instruction keyword, so a mismatch leaves sizes empty rather than wrong.
    """
    if not rows:
        return
    entries = list(reversed(hist))  # oldest first
    own_rows = rows[1:]
    # the legacy builder appends one `LABEL` entry for the --label options
    while entries and _history_kind(entries[-1]) == "LABEL" and not _aligned(own_rows, entries) \
            and (not own_rows or not own_rows[-1].instruction.upper().startswith("LABEL")):
        entries = entries[:-1]
    if not _aligned(own_rows, entries):
        return
    n_base = len(entries) - len(own_rows)
    own = entries[n_base:]
    layer_of = _layer_ids(entries, diff_ids, builder)
    base_size = sum(int(e.get("Size") or 0) for e in entries[:n_base])
    rows[0].layer_size = base_size
    rows[0].cumulative_size = base_size
    cumulative = base_size
    for i, (row, entry) in enumerate(zip(own_rows, own)):
        size = int(entry.get("Size") or 0)
        cumulative += size
        row.layer_size = size
        row.cumulative_size = cumulative
        row.layer_id = layer_of.get(n_base + i)


def _aligned(rows: list[BuildStep], entries: list[dict]) -> bool:
    if len(rows) > len(entries):
        return False
    own = entries[len(entries) - len(rows):]
    return all(_history_kind(e) in (r.instruction.split(None, 1)[0].upper(), None) for r, e in zip(rows, own))


def _legacy_layer_ids(engine: Engine, rows: list[BuildStep], obs: list[dict]) -> None:
    """Legacy builds leave an intermediate image per step: a step made a layer iff its image has one
    more layer than the previous step's (exact, unlike guessing from the history's sizes)."""
    final = [(v["row"], v.get("image")) for v in obs if "row" in v and v["row"].in_final]
    prev: list[str] | None = None
    for row, image_id in final:
        if not image_id:
            prev = None
            continue
        try:
            layers = engine.api.inspect_image(image_id).get("RootFS", {}).get("Layers", [])
        except Exception:  # an intermediate image may already be gone; leave the id empty
            prev = None
            row.layer_id = None
            continue
        row.layer_id = layers[-1] if prev is not None and len(layers) > len(prev) else None
        prev = layers


def _history_kind(entry: dict) -> str | None:
    """The Dockerfile keyword a history entry came from (None when it cannot be told)."""
    created = (entry.get("CreatedBy") or "").strip()
    if not created:
        return None
    if created.startswith("/bin/sh -c #(nop)"):
        words = created[len("/bin/sh -c #(nop)"):].split()
        return words[0].upper() if words else None
    if created.startswith(("/bin/sh -c", "|")):  # legacy RUN (with build args: "|1 V=1 /bin/sh -c ...")
        return "RUN"
    word = created.split(None, 1)[0].upper()
    return word if word.isalpha() else None


def _layer_ids(entries: list[dict], diff_ids: list[str], builder: str) -> dict[int, str]:
    """Which history entries carry a filesystem layer, paired with the RootFS diff ids in order.

    The engine API's history has no ``empty_layer`` flag, so candidate rules are tried and one is
    used only when it accounts for exactly the image's layers.
    """

    def structural(e: dict) -> bool:
        kind = _history_kind(e)
        created = e.get("CreatedBy") or ""
        if kind in ("COPY", "ADD") or (kind in _BK_LAYER_KINDS and "# buildkit" in created):
            return True
        if kind == "WORKDIR" and not created.startswith("/bin/sh -c #(nop)"):
            return True  # BuildKit's WORKDIR always makes a layer
        return int(e.get("Size") or 0) > 0 or (kind == "RUN" and "#(nop)" not in created and int(e.get("Size") or 0) > 0)

    def sized(e: dict) -> bool:
        return int(e.get("Size") or 0) > 0

    def non_nop(e: dict) -> bool:
        created = e.get("CreatedBy") or ""
        return structural(e) or ("#(nop)" not in created and _history_kind(e) in ("RUN", None))

    def with_workdir(e: dict) -> bool:
        return structural(e) or _history_kind(e) == "WORKDIR"

    for rule in (structural, non_nop, with_workdir, sized):
        idx = [i for i, e in enumerate(entries) if rule(e)]
        if len(idx) == len(diff_ids):
            return dict(zip(idx, diff_ids))
    return {}


# -- reuse: the same inputs, the image still present -------------------------------------------------
# A warm BuildKit build of unchanged inputs spends 0.1–0.2 s (CLI start, session, context sync) to answer
# "everything CACHED"; the legacy builder answers in 0.1 s. nbops keys each successful build by its
# inputs — Dockerfile text, build args, target, labels, secret ids, builder, the ids of the base images
# and of every image named by --from, and every context file (size, mtime, ctime, inode) — and when a build with
# that key already produced an image that is still on the engine, it tags that image and returns the
# recorded profile with every step marked cached. That is the answer BuildKit's own cache would give
# (its keys are made of the same things), without starting a build. Not with --no-cache, --pull or
# --squash, nor when the Dockerfile fetches from the network (ADD URL/git) or names a base by a
# variable nbops cannot resolve.
_REUSE: dict[tuple[str, str], tuple[str, int | None, list[BuildStep], str]] = {}
_FROM_REF = re.compile(r"--from=(\S+)|\bfrom=([^,\s]+)")
_REMOTE_ADD = re.compile(r"^\s*ADD\s+(?:--\S+\s+)*\S*(?:://|git@)", re.I | re.M)


def _file_identity(st: os.stat_result) -> str:
    """A file as make and git's index know it: size, modification and change time, inode. Any write
    (or chmod, rename over it) moves the change time, which no user can set back; reading contents
    instead would cost a full hash of the context beside every build (measured: +0.4 s on a 150 MB
    context with --no-cache, on 2 cores the builder needs too)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def _tree_digest(h: Any, root: Path, prefix: str = "") -> None:
    """Feed every entry under ``root`` (path, kind, mode, file identity or link target) into ``h``, sorted."""
    stack = [root]
    entries: list[tuple[str, str]] = []
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            for e in it:
                rel = prefix + os.path.relpath(e.path, root)
                st = e.stat(follow_symlinks=False)
                if e.is_symlink():
                    entries.append((rel, f"l {st.st_mode:o} {os.readlink(e.path)}"))
                elif e.is_dir(follow_symlinks=False):
                    entries.append((rel, f"d {st.st_mode:o}"))
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    entries.append((rel, f"f {st.st_mode:o} {_file_identity(st)}"))
                else:
                    entries.append((rel, f"o {st.st_mode:o}"))
    for rel, what in sorted(entries):
        h.update(f"{rel}\0{what}\n".encode())


def _input_key(engine: Engine, source: str, context: str | os.PathLike[str] | None,
               files: Mapping[str, str | os.PathLike[str]] | None, buildargs: Mapping[str, str] | None,
               target: str | None, labels: Mapping[str, str] | None,
               secrets: Mapping[str, str | os.PathLike[str]] | None, use_buildkit: bool) -> str | None:
    """A digest of everything the build reads, or None when the inputs cannot be pinned down."""
    import json

    from docker.errors import ImageNotFound

    from .dockerfile import parse

    if _REMOTE_ADD.search(source):
        return None
    st = parse(source, buildargs)
    stage_names = {s.name for s in st.stages if s.name}
    refs = [s.base_resolved for s in st.stages if not s.from_stage]
    for m in _FROM_REF.finditer(source):
        ref = m.group(1) or m.group(2)
        if ref not in stage_names and not ref.isdigit():
            refs.append(ref)
    bases = {}
    for ref in dict.fromkeys(refs):
        if ref == "scratch":
            continue
        if "$" in ref:
            return None
        try:
            bases[ref] = engine.api.inspect_image(ref)["Id"]
        except ImageNotFound:
            return None  # the build would pull it
        except Exception:
            return None
    h = hashlib.sha256()
    h.update(json.dumps({"source": source, "buildargs": sorted((buildargs or {}).items()), "target": target,
                         "labels": sorted((labels or {}).items()), "secrets": sorted(secrets or {}),
                         "buildkit": use_buildkit, "engine": engine.address, "bases": sorted(bases.items())},
                        sort_keys=True).encode())
    try:
        if context is not None:
            _tree_digest(h, Path(context))
        for dest, src in sorted((files or {}).items()):
            h.update(f"file {dest}\0".encode())
            if Path(src).is_dir():
                _tree_digest(h, Path(src), prefix=f"{dest}/")
            else:
                h.update(_file_identity(os.stat(src)).encode())
    except OSError:
        return None
    return h.hexdigest()


def _reusable(engine: Engine, key: str, dockerfile_sha: str, store: _history.History
              ) -> tuple[str, int | None, list[BuildStep], str] | None:
    """(image id, build id, steps, builder) of an earlier build with these inputs — this process's or the store's."""
    import json

    hit = _REUSE.get((engine.address, key))
    if hit is None:
        try:
            rows = store.execute(
                "SELECT id, image_id, meta, builder FROM builds WHERE dockerfile_sha=? AND engine=? AND ok=1 "
                "ORDER BY id DESC LIMIT 50", (dockerfile_sha, engine.address))
        except Exception:
            return None
        for build_id, image_id, meta, used in rows:
            if image_id and meta and json.loads(meta).get("input_key") == key:
                cols = [f for f in BuildStep.__dataclass_fields__]
                steps = [BuildStep(**dict(zip(cols, r))) for r in store.execute(
                    f"SELECT {', '.join(c if c != 'in_final' else 'NULL' for c in cols)} FROM build_steps "
                    "WHERE build_id=? ORDER BY step", (build_id,))]
                for st in steps:  # not stored: the final stage's rows come last (see _profile)
                    st.in_final = st.stage == steps[-1].stage
                hit = (image_id, build_id, steps, used)
                break
    return hit


def _remember(engine: Engine, key: str | None, image_id: str, build_id: int | None, steps: list[BuildStep],
              builder: str) -> None:
    if key is None:
        return
    if len(_REUSE) >= 1024:
        try:
            _REUSE.pop(next(iter(_REUSE)))
        except (StopIteration, RuntimeError, KeyError):  # another thread's build changed it meanwhile
            pass
    _REUSE[(engine.address, key)] = (image_id, build_id, steps, builder)


def _reuse(engine: Engine, hit: tuple[str, int | None, list[BuildStep], str], key: str, tags: Sequence[str],
           name: str | None, dockerfile_sha: str, store: _history.History, t0: float, buildargs, target,
           labels) -> BuildResult | None:
    """Tag the earlier image and record a build that reused it; None if that image is gone."""
    from dataclasses import replace

    image_id, from_build, steps, used = hit
    try:
        attrs = engine.api.inspect_image(image_id)
    except Exception:  # deleted (or unreadable): build for real
        _REUSE.pop((engine.address, key), None)
        return None
    have = set(attrs.get("RepoTags") or [])
    for t in tags:
        repo, tag = _split_tag(t)
        if f"{repo}:{tag or 'latest'}" not in have:
            engine.call(f"tag the image as {t}", engine.api.tag, image_id, repo, tag or "latest", force=True)
    steps = [replace(s, cached=True, duration_s=0.0) if s.cached is not None else replace(s) for s in steps]
    duration = time.monotonic() - t0
    layers = attrs.get("RootFS", {}).get("Layers", [])
    result = BuildResult(name=name, tags=list(tags), image_id=attrs["Id"], builder=used, duration_s=duration,
                         steps=steps, size=int(attrs.get("Size") or 0), n_layers=len(layers),
                         dockerfile_sha=dockerfile_sha, reused=True, reused_from=from_build)
    _record_success(store, result, engine, {
        "target": target, "buildargs": sorted((buildargs or {}).keys()), "nocache": False, "pull": False,
        "labels": dict(labels or {}), "squashed": None, "input_key": key, "reused_from": from_build})
    return result

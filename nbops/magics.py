"""The IPython layer: parse a line, call ONE core function, return its result object.

An :class:`~nbops.errors.NbopsError` becomes a one-line ``UsageError`` (no traceback wall); the
full error (build log, failing tasks...) stays available through ``%nbops error``.
Settings: ``%config NbopsMagics.<trait> = ...``, defaults from ``[tool.nbops]`` in pyproject.toml.
"""

from __future__ import annotations

import functools
import os
import shlex
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Enum, Float, Unicode

from .errors import NbopsError


def _friendly(fn):
    """Turn nbops errors into one clear line; keep the error for ``%nbops error``."""

    @functools.wraps(fn)
    def wrapper(self: NbopsMagics, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except NbopsError as err:
            self.last_error = err
            raise UsageError(err.one_line()) from None

    return wrapper


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad {what} {item!r}: use KEY=VALUE")
        out[key] = value
    return out


@magics_class
class NbopsMagics(Magics):
    docker_host = Unicode(None, allow_none=True, config=True,
                          help="Engine address; default $DOCKER_HOST, else the local lab's engine.")
    registry = Unicode(None, allow_none=True, config=True, help="Registry for %push; default: the lab registry.")
    timeout = Float(30.0, config=True, help="Seconds any single engine call may take.")
    deploy_timeout = Float(120.0, config=True, help="Seconds a rollout may take to become healthy.")
    builder = Enum(["auto", "buildkit", "legacy"], "auto", config=True, help="Builder for %build.")
    progress = Enum(["auto", "widget", "text", "none"], "auto", config=True, help="Progress display.")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self.cells: dict[str, Any] = {}
        self.last_error: NbopsError | None = None
        self._engines: dict[str, Any] = {}
        for key, value in _pyproject_defaults().items():
            if self.has_trait(key) and not (self.config.get("NbopsMagics") or {}).get(key):
                setattr(self, key, value)

    # -- shared ---------------------------------------------------------------------------------
    def engine(self):
        from .engine import Engine, resolve_address

        address = resolve_address(self.docker_host)
        eng = self._engines.get(address)
        if eng is None:
            eng = Engine.connect(address, timeout=self.timeout)
            self._engines[address] = eng
        return eng

    def _progress(self) -> str | None:
        return None if self.progress == "auto" else self.progress

    # -- %%dockerfile -------------------------------------------------------------------------
    @cell_magic
    @_friendly
    @magic_arguments()
    @argument("name", help="name to build it by: %%build NAME -t TAG")
    @argument("--no-interpolate", action="store_true", help="keep {var} as written")
    @argument("--context", help="directory sent as the build context")
    @argument("--file", action="append", metavar="SRC[:DEST]", help="add a local file to the context")
    def dockerfile(self, line: str, cell: str) -> Any:
        """Store the cell as Dockerfile NAME (``{var}`` filled from the notebook) and check it."""
        from .dockerfile import DockerfileCell, interpolate

        args = parse_argstring(self.dockerfile, line)
        text = cell if args.no_interpolate else interpolate(cell, self.shell.user_ns)
        files = {}
        for spec in args.file or []:
            src, _, dest = spec.partition(":")
            files[dest or Path(src).name] = src
        df = DockerfileCell(args.name, text, context=args.context, files=files)
        df.check()
        self.cells[args.name] = df
        return df

    # -- %build -----------------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("name", help="a %%%%dockerfile NAME, or a directory holding a Dockerfile")
    @argument("-t", "--tag", action="append", default=[], help="name:tag for the image (repeatable)")
    @argument("--build-arg", action="append", metavar="KEY=VALUE")
    @argument("--label", action="append", metavar="KEY=VALUE")
    @argument("--target", help="stage to build")
    @argument("--no-cache", action="store_true")
    @argument("--pull", action="store_true", help="always look for a newer base image")
    @argument("--secret", action="append", metavar="id=ID,src=FILE", help="BuildKit build secret")
    @argument("--builder", choices=["auto", "buildkit", "legacy"], default=None)
    def build(self, line: str) -> Any:
        """Build a Dockerfile cell; returns a BuildResult (profile in .to_frame())."""
        from . import build as core

        args = parse_argstring(self.build, line)
        cell = self.cells.get(args.name)
        if cell is not None:
            source, context, files = cell.text, cell.context, cell.files
        elif Path(args.name, "Dockerfile").is_file():
            source, context, files = Path(args.name, "Dockerfile").read_text(), args.name, {}
        else:
            known = ", ".join(sorted(self.cells)) or "none yet"
            raise UsageError(f"no Dockerfile named {args.name!r} (cells: {known}) — write a %%dockerfile {args.name} cell first")
        secrets = {}
        for spec in args.secret or []:
            kv = _pairs(spec.split(","), "--secret part")
            if "id" not in kv or "src" not in kv:
                raise UsageError(f"bad --secret {spec!r}: use id=NAME,src=FILE")
            secrets[kv["id"]] = kv["src"]
        buildargs, labels = _pairs(args.build_arg, "--build-arg"), _pairs(args.label, "--label")
        return core.build(source, args.tag, engine=self.engine(), name=args.name, context=context, files=files,
                          buildargs=buildargs, labels=labels, target=args.target, nocache=args.no_cache,
                          pull=args.pull, secrets=secrets, builder=args.builder or self.builder,
                          progress=self._progress())

    # -- %push ------------------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("image", help="local image, e.g. hello:1")
    @argument("--to", help="target REGISTRY/REPO[:TAG]; default: the configured registry")
    def push(self, line: str) -> Any:
        """Push an image; returns a PushResult with the verified digest and per-layer rows."""
        from . import distribute

        args = parse_argstring(self.push, line)
        return distribute.push(args.image, args.to, engine=self.engine(), registry=self.registry,
                               progress=self._progress())

    # -- %deploy ----------------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("image", help="image to run (pushed images deploy by registry digest)")
    @argument("--name", required=True, help="service name")
    @argument("--replicas", type=int, default=1)
    @argument("--publish", "-p", action="append", default=[], metavar="[PUBLISHED:]TARGET")
    @argument("--env", "-e", action="append", metavar="KEY=VALUE")
    @argument("--orchestrator", default="swarm")
    @argument("--timeout", type=float, default=None, help="seconds to wait for health")
    def deploy(self, line: str) -> Any:
        """Deploy as a service and wait until every replica is healthy; returns a DeployResult."""
        from . import deploy as core

        args = parse_argstring(self.deploy, line)
        env = _pairs(args.env, "--env")
        return core.deploy(args.image, name=args.name, replicas=args.replicas, publish=args.publish, env=env,
                           orchestrator=args.orchestrator, engine=self.engine(),
                           timeout=args.timeout or self.deploy_timeout)

    # -- %layers ---------------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("image", help="repo:tag or id (engine), or HOST:PORT/REPO:TAG with --source registry")
    @argument("--source", choices=["auto", "dirs", "save", "registry"], default="auto",
              help="overlay2 layer dirs, the save stream, or registry blobs (default: fastest available)")
    @argument("--no-cache", action="store_true", help="read every layer again (ignore the layer cache)")
    def layers(self, line: str) -> Any:
        """Analyse an image's layers; returns a LayerReport (.to_frame(), .wasted(), .efficiency)."""
        from . import layers as core

        args = parse_argstring(self.layers, line)
        engine = None if args.source == "registry" else self.engine()
        return core.analyze(args.image, source=args.source, engine=engine, cache=not args.no_cache)

    # -- %nbops -----------------------------------------------------------------------------------
    @line_magic
    @_friendly
    def nbops(self, line: str) -> Any:
        """%nbops lab up [--nodes N] | lab status | lab down | history [builds|pushes|deploys] | error | runs [RUN_ID]"""
        words = shlex.split(line)
        if not words:
            raise UsageError("usage: %nbops lab up|status|down · %nbops history [builds|pushes|deploys] · %nbops error")
        handler = _SUBCOMMANDS.get(words[0])
        if handler is None:
            raise UsageError(f"unknown %nbops command {words[0]!r}; use one of: {', '.join(_SUBCOMMANDS)}")
        return handler(self, words[1:])


def _cmd_lab(magics: NbopsMagics, argv: list[str]) -> Any:
    from .cli import lab_command

    magics._engines.clear()
    return lab_command(argv, echo=print)


def _cmd_history(magics: NbopsMagics, argv: list[str]) -> Any:
    from . import history

    what = argv[0] if argv else "builds"
    store = history.default()
    table = {"builds": store.builds, "pushes": store.pushes, "deploys": store.deploys}.get(what)
    if table is None:
        raise UsageError(f"unknown history table {what!r}; use builds, pushes or deploys")
    return table()


def _cmd_error(magics: NbopsMagics, argv: list[str]) -> Any:
    err = magics.last_error
    if err is None:
        return "no nbops error in this session"
    lines = [f"{type(err).__name__}: {err}"]
    for key, value in err.data.items():
        if key in ("build_log", "output_tail") and isinstance(value, list):
            lines.append(f"{key}:\n  " + "\n  ".join(value[-40:]))
        elif key != "result":
            lines.append(f"{key}: {value}")
    print("\n".join(lines))
    return err.data.get("result")


def _cmd_runs(magics: NbopsMagics, argv: list[str]) -> Any:
    from . import runbook

    if argv:
        return runbook.get_run(argv[0])
    return runbook.runs()


_SUBCOMMANDS = {"lab": _cmd_lab, "history": _cmd_history, "error": _cmd_error}
_SUBCOMMANDS["runs"] = _cmd_runs


def _pyproject_defaults() -> dict[str, Any]:
    """``[tool.nbops]`` from the nearest pyproject.toml above the working directory."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return {}
    here = Path(os.getcwd())
    for d in (here, *here.parents):
        f = d / "pyproject.toml"
        if f.is_file():
            try:
                return dict(tomllib.loads(f.read_text()).get("tool", {}).get("nbops", {}))
            except (OSError, ValueError):
                return {}
    return {}


def register(ipython: Any) -> None:
    ipython.register_magics(NbopsMagics)

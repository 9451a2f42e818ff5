"""The IPython layer: parse a line, call ONE core function, return its result object.

An :class:`~nbops.errors.NbopsError` becomes a one-line ``UsageError`` (no traceback wall); the
full error (build log, failing tasks...) stays available through ``%nbops error``.
Settings: ``%config NbopsMagics.<trait> = ...``, defaults from ``[tool.nbops]`` in pyproject.toml.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.utils.process import arg_split
from traitlets import Enum, Float, List, Unicode

from .errors import NbopsError


def _friendly(fn):
    """Turn nbops errors into one clear line; keep the error for ``%nbops error``."""

    @functools.wraps(fn)
    def wrapper(self: NbopsMagics, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str):
            try:  # the argument parsers split with shlex, which raises ValueError on an open quote
                shlex.split(args[0])  # %nbops
                arg_split(args[0], strict=True)  # magic_arguments (non-POSIX quoting)
            except ValueError as exc:
                raise UsageError(f"cannot read the magic's line: {exc} — close the quote or escape it") from None
        try:
            return fn(self, *args, **kwargs)
        except NbopsError as err:
            self.last_error = err
            raise UsageError(err.one_line()) from None
        except UsageError as exc:  # argparse quotes the user's words as typed, newlines included
            text = str(exc).strip()
            if len(text.splitlines()) > 1:
                raise UsageError(_one_line(text)) from None
            raise

    return wrapper


_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    """A message on one line: every line break inside it is shown escaped, as the user would type it."""
    return _LINE_BREAKS.sub(lambda m: ascii(m.group())[1:-1], text)


def _is_file(path: Path) -> bool:
    """``path.is_file()`` that says False for names the OS refuses (too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


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
    stall_timeout = Float(120.0, config=True,
                          help="Seconds without build output after which %build pings the engine; "
                               "no answer stops the build (engine hung mid-build).")
    builder = Enum(["auto", "buildkit", "legacy"], "auto", config=True, help="Builder for %build.")
    progress = Enum(["auto", "widget", "text", "none"], "auto", config=True, help="Progress display.")
    name_template = Unicode(None, allow_none=True, config=True,
                            help="Naming scheme for %push without --to, e.g. '{registry}/{team}/{name}:{git_tag|git_sha}'.")
    team = Unicode("", config=True, help="The {team} field of the naming template.")
    protected_registries = List(Unicode(), [], config=True,
                                help="Registries (host[:port]) where %push refuses the mutable 'latest' tag.")
    immutable_tags = Unicode(r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.-]+)?$", config=True,
                             help="Regex of tags that %push never overwrites in a registry ('' = none).")

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
    @argument("--squash", action="store_true", help="merge the layers added on the base into one")
    @argument("--no-reuse", action="store_true",
              help="start the builder even when the inputs equal an earlier build's whose image is still there")
    def build(self, line: str) -> Any:
        """Build a Dockerfile cell; returns a BuildResult (profile in .to_frame())."""
        from . import build as core

        args = parse_argstring(self.build, line)
        cell = self.cells.get(args.name)
        if cell is not None:
            source, context, files = cell.text, cell.context, cell.files
        elif _is_file(Path(args.name, "Dockerfile")):
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
                          progress=self._progress(), squash=args.squash, reuse=not args.no_reuse,
                          stall_timeout=self.stall_timeout)

    # -- %push / %pull ------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("image", help="local image, e.g. hello:1")
    @argument("--to", help="REGISTRY/REPO[:TAG], dir:/share[/NAME:TAG] or archive:/path.tar[.gz]; "
                           "default: the naming template, else the configured registry")
    @argument("--user", help="registry user; the password is asked for once (never echoed or stored)")
    def push(self, line: str) -> Any:
        """Push an image; returns a PushResult with the verified digest and per-layer rows."""
        from . import distribute

        args = parse_argstring(self.push, line)
        engine = self.engine()
        ref = distribute.plan_ref(args.image, args.to, registry=self.registry, template=self.name_template,
                                  team=self.team or None)
        creds = self._credentials(ref, args.user)
        return distribute.push(args.image, ref, engine=engine, registry=self.registry, auth=creds,
                               progress=self._progress(), policy=self.policy())

    @line_magic
    @_friendly
    @magic_arguments()
    @argument("ref", help="REGISTRY/REPO:TAG (or REPO:TAG from the configured registry), dir:/share/NAME:TAG, "
                          "archive:/path.tar[.gz]")
    @argument("--tag", help="also tag the pulled image locally as NAME:TAG")
    @argument("--user", help="registry user; the password is asked for once")
    def pull(self, line: str) -> Any:
        """Pull an image (registry, shared directory or archive); returns a PullResult / DirResult / ArchiveResult."""
        from . import distribute

        args = parse_argstring(self.pull, line)
        engine = self.engine()
        creds = self._credentials(args.ref, args.user)
        return distribute.pull(args.ref, engine=engine, registry=self.registry, auth=creds, tag=args.tag,
                               progress=self._progress())

    def policy(self):
        from .naming import Policy

        return Policy(protected=list(self.protected_registries), immutable=self.immutable_tags or None)

    def _credentials(self, ref: str, user: str | None):
        """Credentials for ``ref``'s registry when ``--user`` is given (asking for the password once)."""
        from . import registry
        from .distribute import _registry_of, default_registry

        if not user or ref.startswith(("dir:", "archive:")):
            return None
        host = _registry_of(ref) or default_registry(self.registry)
        known = registry.credentials(host)
        if known is not None and known.username == user:
            return known
        return registry.login(host, user, prompt=_ask_password)

    # -- %deploy ----------------------------------------------------------------------------------
    @line_magic
    @_friendly
    @magic_arguments()
    @argument("image", nargs="?", help="image to run (pushed images deploy by registry digest)")
    @argument("--name", help="service name (or stack name)")
    @argument("--rollback", metavar="NAME", help="roll service NAME back to its previous spec")
    @argument("--replicas", type=int, default=None)
    @argument("--mode", choices=["replicated", "global"], default=None)
    @argument("--publish", "-p", action="append", default=[], metavar="[PUBLISHED:]TARGET")
    @argument("--env", "-e", action="append", metavar="KEY=VALUE")
    @argument("--constraint", action="append", metavar="EXPR", help="placement, e.g. node.role==manager")
    @argument("--spread", action="append", metavar="LABEL", help="placement preference, e.g. node.labels.zone")
    @argument("--update", metavar="K=V,...", help="parallelism=1,delay=1s,failure_action=rollback,monitor=5s,"
              "max_failure_ratio=0,order=start-first")
    @argument("--rollback-config", metavar="K=V,...", help="same keys, for rollbacks")
    @argument("--network", action="append", metavar="NAME", help="overlay network (created attachable if missing)")
    @argument("--mount", action="append", metavar="SRC:DST[:ro]", help="volume, bind (absolute SRC) or tmpfs:DST")
    @argument("--secret", action="append", metavar="NAME[=FILE]")
    @argument("--config", action="append", metavar="NAME[=FILE][:TARGET]")
    @argument("--cpus", type=float, default=None)
    @argument("--memory", default=None, help="limit, e.g. 64m")
    @argument("--restart", default=None, help="swarm: none|on-failure[:N]|any; engine: no|on-failure[:N]|always|unless-stopped")
    @argument("--health-cmd", default=None)
    @argument("--health-interval", default=None)
    @argument("--health-retries", type=int, default=None)
    @argument("--health-start-period", default=None)
    @argument("--init", action="store_true", help="run an init as PID 1 (forwards SIGTERM)")
    @argument("--compose", help="compose file (with --orchestrator stack)")
    @argument("--probe", action="store_true", help="send bounded HTTP requests during the rollout, count failures")
    @argument("--from", dest="pickers", action="append", metavar="VAR",
              help="a NodePicker / OrchestratorPicker variable whose choice to use")
    @argument("--orchestrator", default=None)
    @argument("--timeout", type=float, default=None, help="seconds to wait for health")
    def deploy(self, line: str) -> Any:
        """Deploy and wait until every replica is healthy (or roll back); returns a DeployResult."""
        from . import deploy as core

        args = parse_argstring(self.deploy, line)
        name, orchestrator, options = _deploy_options(args, self.shell.user_ns, self.deploy_timeout)
        return core.deploy(args.image, name=name, orchestrator=orchestrator, engine=self.engine(), **options)

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
        """%nbops lab up [--nodes N] | lab status | lab down | history [builds|pushes|deploys] | error | runs [RUN_ID] | help"""
        words = shlex.split(line)
        if not words:
            raise UsageError("usage: %nbops lab up|status|down|fault KIND NODE · %nbops history [builds|pushes|deploys] · %nbops error"
                             " · %nbops help")
        if words[0] in _HELP:
            print("\n".join(f"%nbops {fn.__doc__}" for fn in dict.fromkeys(_SUBCOMMANDS.values())))
            return None
        handler = _SUBCOMMANDS.get(words[0])
        if handler is None:
            raise UsageError(f"unknown %nbops command {words[0]!r}; use one of: {', '.join(_SUBCOMMANDS)}, help")
        if handler is not _cmd_lab and _HELP & set(words[1:]):  # lab's own parser prints a fuller help
            print(f"%nbops {handler.__doc__}")
            return None
        try:
            return handler(self, words[1:])
        except SystemExit as exc:  # argparse has printed its --help
            if exc.code in (0, None):
                return None
            raise UsageError(f"%nbops {words[0]}: bad arguments; `%nbops {words[0]} --help` lists them") from None


def _deploy_options(args: Any, user_ns: dict[str, Any], default_timeout: float) -> tuple[str, str, dict[str, Any]]:
    """%deploy's arguments (and any --from pickers) as deploy() options, checked before connecting."""
    from . import deploy as core

    name = args.name or args.rollback
    if not name:
        raise UsageError("%deploy IMAGE --name NAME (or %deploy --rollback NAME)")
    constraints, orchestrator = list(args.constraint or []), args.orchestrator
    for var in args.pickers or []:
        picker = user_ns.get(var)
        if picker is None or not hasattr(picker, "deploy_options"):
            raise UsageError(f"--from {var}: not a NodePicker or OrchestratorPicker in this notebook")
        opts = picker.deploy_options()
        constraints += opts.get("constraints", [])
        orchestrator = orchestrator or opts.get("orchestrator")
    health = None
    if any(v is not None for v in (args.health_cmd, args.health_interval, args.health_retries, args.health_start_period)):
        health = core.HealthSpec(cmd=args.health_cmd, interval=core.parse_duration(args.health_interval),
                                 retries=args.health_retries, start_period=core.parse_duration(args.health_start_period))
    options = dict(replicas=args.replicas, mode=args.mode, publish=args.publish or None,
                   env=_pairs(args.env, "--env") or None, constraints=constraints or None,
                   preferences=args.spread, update=args.update, rollback=args.rollback_config,
                   networks=args.network, mounts=args.mount, secrets=args.secret, configs=args.config,
                   cpus=args.cpus, memory=args.memory, restart=args.restart, health=health,
                   init=args.init or None, compose=args.compose, probe=args.probe or None,
                   timeout=args.timeout or default_timeout)
    if args.rollback:
        options["action"] = "rollback"
    options = {k: v for k, v in options.items() if v is not None}
    core.DeploySpec(image=args.image, name=name, **options)  # bad input fails here, before connecting
    return name, orchestrator or "swarm", options


_HELP = {"help", "-h", "--help"}


def _cmd_lab(magics: NbopsMagics, argv: list[str]) -> Any:
    """lab up [--nodes N] [--live-restore] | status | down | fault KIND [NODE] | base debian"""
    from .cli import lab_command

    magics._engines.clear()
    return lab_command(argv, echo=print)


def _cmd_history(magics: NbopsMagics, argv: list[str]) -> Any:
    """history [builds|pushes|deploys|pulls]: what this machine has built, pushed, deployed (a DataFrame)"""
    from . import history

    what = argv[0] if argv else "builds"
    store = history.default()
    table = {"builds": store.builds, "pushes": store.pushes, "deploys": store.deploys,
             "pulls": store.pulls}.get(what)
    if table is None:
        raise UsageError(f"unknown history table {what!r}; use builds, pushes or deploys")
    return table()


def _cmd_error(magics: NbopsMagics, argv: list[str]) -> Any:
    """error: the last nbops error of this session in full (build log, output tail, data)"""
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
    """runs [RUN_ID]: the runbook runs (nbops run), or one run's cells"""
    from . import runbook

    if argv:
        return runbook.get_run(argv[0])
    return runbook.runs()


def _cmd_doctor(magics: NbopsMagics, argv: list[str]) -> Any:
    """doctor: what the engine (and its swarm) can do, and what to fix"""
    from . import doctor

    return doctor.doctor(magics.engine())


def _ask_password(prompt: str) -> str:
    import getpass

    from IPython.core.error import StdinNotImplementedError

    try:
        return getpass.getpass(prompt)
    except StdinNotImplementedError:
        raise UsageError("this kernel cannot ask for a password (no stdin): log in with `docker login` "
                         "(nbops reads ~/.docker/config.json) or call nbops.registry.login(...) in code") from None


def _cmd_registry(magics: NbopsMagics, argv: list[str]) -> Any:
    """registry login HOST --user U | logout HOST | repos [HOST] | tags REPO | layers REF | delete REF | dir PATH"""
    import argparse

    from . import registry
    from .cli import _ParseError, _Parser
    from .distribute import default_registry

    parser = _Parser(prog="%nbops registry", add_help=False, exit_on_error=False)
    parser.add_argument("action", choices=["login", "logout", "repos", "tags", "layers", "delete", "dir"])
    parser.add_argument("what", nargs="?")
    parser.add_argument("--user")
    parser.add_argument("--registry")
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, _ParseError):
        raise UsageError(f"usage: %nbops {_cmd_registry.__doc__}") from None
    if args.action == "dir":
        from .archive import Layout

        return Layout(args.what or ".").frame()
    if args.action in ("login", "logout"):
        host = args.what or default_registry(magics.registry)
        if args.action == "logout":
            return registry.logout(host)
        if not args.user:
            raise UsageError("usage: %nbops registry login HOST --user NAME (the password is asked for)")
        return registry.login(host, args.user, prompt=_ask_password)
    if args.action == "repos":
        return registry.Registry(args.what or args.registry or default_registry(magics.registry)).repos_frame()
    if not args.what:
        raise UsageError(f"usage: %nbops registry {args.action} {'REPO' if args.action == 'tags' else 'REF'}")
    from .distribute import _registry_of

    ref = args.what if _registry_of(args.what) else f"{args.registry or default_registry(magics.registry)}/{args.what}"
    if args.action == "tags":
        host, _, repo = ref.partition("/")
        return registry.Registry(host).tags_frame(repo)
    host, repo, reference = registry.split_ref(ref)
    reg = registry.Registry(host)
    return reg.layers_frame(repo, reference) if args.action == "layers" else reg.delete(repo, reference)


def _cmd_name(magics: NbopsMagics, argv: list[str]) -> Any:
    """name IMAGE: the reference %push would use (naming template + git state)."""
    from .distribute import plan_ref

    if len(argv) != 1:
        raise UsageError("usage: %nbops name IMAGE")
    return plan_ref(argv[0], registry=magics.registry, template=magics.name_template, team=magics.team or None)


_SUBCOMMANDS = {"lab": _cmd_lab, "history": _cmd_history, "error": _cmd_error, "registry": _cmd_registry,
                "name": _cmd_name, "doctor": _cmd_doctor}
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

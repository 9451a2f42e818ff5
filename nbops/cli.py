"""The ``nbops`` command: ``nbops lab up|status|down``, ``nbops history``, ``nbops layers gate IMAGE``,
``nbops run``, ``nbops runs``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import NbopsError


class _ParseError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so the magic can show one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ParseError(f"{self.prog}: {message}")


def _lab_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nbops lab", description="the local lab: engines, registry, swarm")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = sub.add_parser("up", help="start the lab (harmless when it is already up)")
    up.add_argument("--nodes", type=int, default=1, help="engines in the swarm (1-9)")
    up.add_argument("--live-restore", action="store_true", help="dockerd --live-restore (implies --no-swarm)")
    up.add_argument("--no-swarm", action="store_true", help="plain engines, no swarm")
    for name, text in (("status", "nodes, addresses, roles, engine versions, registry"),
                       ("down", "stop everything the lab started and remove it")):
        sub.add_parser(name, help=text)
    fault = sub.add_parser("fault", help="a teaching fault: " + ", ".join(LAB_FAULTS))
    fault.add_argument("kind", choices=LAB_FAULTS)
    fault.add_argument("node", nargs="?", help="node1..nodeN (restart-manager takes none)")
    base = sub.add_parser("base", help="a richer base image on every node, built once and cached")
    base.add_argument("distro", choices=["debian"], help="debian: debootstrap --variant=minbase → docker import")
    base.add_argument("--suite", default="bookworm", help="the Debian suite (default bookworm)")
    for action in sub.choices.values():
        action.add_argument("--home", help="lab directory (default $NBOPS_HOME/lab)")
    return p


LAB_FAULTS = ("stop", "crash", "start", "drain", "activate", "disconnect", "reconnect", "restart-manager")


def lab_fault(lab: Any, kind: str, node: str | None) -> Any:
    """Run one teaching fault of the lab (``nbops lab fault KIND [NODE]``)."""
    from .errors import ConfigError

    if kind == "restart-manager":
        return lab.restart_manager()
    if not node:
        raise ConfigError(f"`nbops lab fault {kind}` needs a node", hint=f"e.g. nbops lab fault {kind} node2")
    actions = {"stop": lambda n: lab.stop_node(n), "crash": lambda n: lab.stop_node(n, crash=True),
               "start": lab.start_node, "drain": lab.drain, "activate": lab.activate,
               "disconnect": lab.disconnect, "reconnect": lab.reconnect}
    return actions[kind](node)


def lab_command(argv: list[str], *, echo: Callable[[str], Any] = print) -> Any:
    from .errors import ConfigError
    from .lab import Lab

    try:
        args = _lab_parser().parse_args(argv)
    except _ParseError as exc:
        raise ConfigError(str(exc), hint="nbops lab up [--nodes N] | status | down | fault KIND [NODE]"
                          " | base debian") from None
    lab = Lab(args.home) if args.home else Lab()
    if args.action == "up":
        swarm = not (args.no_swarm or args.live_restore)
        return lab.up(nodes=args.nodes, live_restore=args.live_restore, swarm=swarm, progress=echo)
    if args.action == "status":
        return lab.status()
    if args.action == "fault":
        return lab_fault(lab, args.kind, args.node)
    if args.action == "base":
        return lab.debian_base(args.suite, progress=echo)
    for line in lab.down():
        echo(line)
    left = {k: v for k, v in lab.leftovers().items() if v}
    if left:
        echo(f"still present: {left}")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nbops", description="Docker Build → Distribute → Deploy from notebooks")
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv[:1])
    try:
        return COMMANDS[ns.command](argv[1:])
    except NbopsError as err:
        print(f"nbops: error: {err.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nbops: interrupted", file=sys.stderr)
        return 130


def _main_lab(argv: list[str]) -> int:
    result = lab_command(argv)
    if result is not None:
        print(repr(result))
        if hasattr(result, "up") and not result.up:
            return 1
    return 0


def _main_history(argv: list[str]) -> int:
    import pandas as pd

    from . import history

    what = argv[0] if argv else "builds"
    store = history.default()
    frames = {"builds": store.builds, "pushes": store.pushes, "deploys": store.deploys}
    if what not in frames:
        print(f"nbops: error: unknown history table {what!r}; use builds, pushes or deploys", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frames[what]().to_string(index=False))
    return 0


def _run_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nbops run", description="execute a runbook notebook headless, record it, resume it")
    p.add_argument("notebook", nargs="?", help="the runbook (.ipynb); optional with --resume")
    p.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a parameter; the value is read as papermill does (int, float, True/False/None, else str)")
    p.add_argument("-r", "--parameters-raw", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="a parameter kept as a string")
    p.add_argument("--out", help="directory for the executed notebook (default $NBOPS_HOME/runs)")
    p.add_argument("--tags", action="append", default=[], help="run only cells with these tags (comma-separated)")
    p.add_argument("--skip-tags", action="append", default=[], help="leave out cells with these tags")
    p.add_argument("--resume", metavar="RUN_ID", help="re-run a failed run from its failed cell")
    p.add_argument("--kernel", help="kernel name (default: the notebook's)")
    return p


def resolve_value(value: str) -> Any:
    """papermill's ``-p`` semantics: True/False/None, int, float, else the string itself."""
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def run_command(argv: list[str], *, echo: Callable[[str], Any] = print) -> Any:
    from . import runbook
    from .errors import ConfigError

    try:
        args = _run_parser().parse_args(argv)
    except _ParseError as exc:
        raise ConfigError(str(exc), hint="nbops run RUNBOOK.ipynb [-p KEY VALUE ...] [--tags T] [--skip-tags T] "
                                         "[--out DIR] | nbops run --resume RUN_ID") from None
    params = {k: resolve_value(v) for k, v in args.parameters}
    params.update(dict(args.parameters_raw))
    split = lambda items: [t for item in items for t in item.split(",") if t]  # noqa: E731
    return runbook.run(args.notebook, params, out=args.out, tags=split(args.tags), skip_tags=split(args.skip_tags),
                       resume=args.resume, kernel=args.kernel, echo=echo)


def _main_run(argv: list[str]) -> int:
    result = run_command(argv, echo=lambda line: print(line, flush=True))
    if not result.ok:
        print(f"nbops: error: {result.one_line()} — fix it, then `nbops run --resume {result.run_id}`",
              file=sys.stderr)
        return 1
    return 0


def _main_runs(argv: list[str]) -> int:
    from . import runbook

    if argv and not argv[0].startswith("-"):
        run = runbook.get_run(argv[0])
        for key, value in run.items():
            print(f"{key:>12}: {value}")
        return 0
    print(repr(runbook.runs()))
    return 0


def _main_doctor(argv: list[str]) -> int:
    from . import doctor

    return doctor.main(argv)


def _main_layers(argv: list[str]) -> int:
    """``nbops layers analyze IMAGE`` · ``nbops layers gate IMAGE [--rules .dive-ci] [--lowest-efficiency X]...``"""
    from . import layers

    p = argparse.ArgumentParser(prog="nbops layers", description="layer analysis and dive-style CI gate")
    sub = p.add_subparsers(dest="action", required=True)
    for name, text in (("analyze", "per-layer sizes, wasted and hidden bytes"),
                       ("gate", "fail (exit 1) when the image breaks a rule, like `dive --ci`")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("image")
        sp.add_argument("--source", choices=layers.SOURCES, default="auto")
        if name == "gate":
            sp.add_argument("--rules", help="a .dive-ci file (default: ./.dive-ci if present, else dive's defaults)")
            for rule in ("lowest-efficiency", "highest-wasted-bytes", "highest-user-wasted-percent",
                         "highest-hidden-bytes"):
                sp.add_argument(f"--{rule}", metavar="VALUE", help="override one rule ('disabled' skips it)")
    args = p.parse_args(argv)
    rep = layers.analyze(args.image, source=args.source)
    print(repr(rep))
    if args.action == "analyze":
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
            print(rep.to_frame().drop(columns=["diff_id", "created_by"]).to_string())
        return 0
    rules_file = args.rules or (".dive-ci" if os.path.isfile(".dive-ci") else None)
    rules = layers.load_rules(rules_file)
    for rule in ("lowest_efficiency", "highest_wasted_bytes", "highest_user_wasted_percent", "highest_hidden_bytes"):
        value = getattr(args, rule)
        if value is not None:
            rules[rule] = value
    result = layers.gate(rep, rules)
    print(result.table())
    print("PASS" if result.passed else f"FAIL: {len(result.failed())} rule(s) broken")
    return result.exit_code


COMMANDS: dict[str, Callable[[list[str]], int]] = {"lab": _main_lab, "history": _main_history,
                                                   "layers": _main_layers, "doctor": _main_doctor}
COMMANDS.update({"run": _main_run, "runs": _main_runs})


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Executable runbooks: run a notebook headless with parameters, record the run, resume after a failure.

``nbops run RUNBOOK.ipynb -p tag v1.2.3`` executes the notebook with papermill (the ``parameters``-
tagged cell convention, papermill's ``-p`` semantics) in a kernel whose environment carries
``NBOPS_RUN_ID`` (so every build, push and deploy row of the history store names the run) and
``NBOPS_PROGRESS=text`` (widget bars freeze in a saved notebook). It writes:

* the executed notebook, read-only, as the immutable record of the run;
* a row in the ``runs`` table: id, notebook, parameters, who/where/when, outcome, the failing cell.

Cell tags:

* ``--tags verify`` runs only the cells tagged ``verify`` (plus the parameters cell and the cells
  tagged ``setup``, which every selection needs); ``--skip-tags slow`` leaves out cells tagged ``slow``.
  A left-out code cell stays in the record as a raw cell marked ``nbops.skipped``.
* ``--resume RUN_ID`` re-runs a failed run from its failed cell. Cells before it are not re-run,
  except the parameters cell and the cells tagged ``setup`` (imports, connections) or ``state``
  (cells that restore what later cells need, typically from the history store with
  :func:`recorded` / :func:`last`, which see the rows of the whole resume chain). The list of
  skipped cells is printed and recorded.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import history as _history
from . import paths
from ._display import card, esc, human_time
from .errors import ConfigError, NbopsError

if TYPE_CHECKING:  # pragma: no cover
    import nbformat
    import pandas as pd

ALWAYS_TAGS = ("parameters", "setup")
RESUME_TAGS = ("parameters", "setup", "state")
ENGINE_NAME = "nbops"


class RunFailed(NbopsError):
    """A runbook cell raised; ``run`` is the :class:`RunResult` (record, failing cell, error)."""


@dataclass
class CellRef:
    """A cell of the runbook as the user wrote it (``index`` counts every cell, from 0)."""

    index: int
    id: str
    tags: list[str]
    source: str

    @property
    def head(self) -> str:
        line = next((ln.strip() for ln in self.source.splitlines() if ln.strip()), "")
        return line if len(line) <= 60 else line[:59] + "…"

    def label(self) -> str:
        """``cell N [id] (tags)``, N counted from 1 as in the notebook's own numbering of cells."""
        return f"cell {self.index + 1} [{self.id}]" + (f" ({', '.join(self.tags)})" if self.tags else "")


@dataclass
class RunResult:
    """One runbook run: its id, the record (executed notebook), the outcome and what was skipped."""

    run_id: str
    notebook: str
    output: str
    params: dict[str, Any]
    status: str
    started: float
    finished: float
    failed_cell: CellRef | None = None
    error: str | None = None
    skipped: list[CellRef] = field(default_factory=list)
    resumed_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def duration_s(self) -> float:
        return self.finished - self.started

    def one_line(self) -> str:
        if self.ok:
            return f"run {self.run_id} ok in {human_time(self.duration_s)}: {self.output}"
        cell = self.failed_cell
        where = f"{cell.label()} `{cell.head}`" if cell else "before the first cell"
        return " ".join(f"run {self.run_id} failed at {where}: {self.error} (record: {self.output})".split())

    def __repr__(self) -> str:
        return f"<RunResult {self.one_line()}>"

    def _repr_html_(self) -> str:
        facts = {"run": self.run_id, "status": self.status, "notebook": self.notebook,
                 "time": human_time(self.duration_s)}
        if self.failed_cell:
            facts["failed"] = self.one_line()
        link = f'<div>record: <a href="{esc(_rel(self.output))}">{esc(Path(self.output).name)}</a></div>'
        return card("run", facts, link)


# -- the run ---------------------------------------------------------------------------------------
def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def run(
    notebook: str | os.PathLike[str] | None,
    params: Mapping[str, Any] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    tags: Sequence[str] = (),
    skip_tags: Sequence[str] = (),
    resume: str | None = None,
    kernel: str | None = None,
    history: _history.History | None = None,
    echo: Callable[[str], Any] | None = print,
    cell_timeout: float | None = 1800,
) -> RunResult:
    """Execute ``notebook`` with ``params``; record it; return the :class:`RunResult` (never raises on a
    cell failure: look at ``.ok`` / ``.failed_cell``; :func:`run_or_raise` raises :class:`RunFailed`)."""
    import nbformat

    store = history or _history.default()
    say = echo or (lambda _line: None)
    chain: list[str] = []
    params = dict(params or {})
    tags, skip_tags = list(tags), list(skip_tags)
    if resume:
        prev = get_run(resume, history=store)
        if prev["status"] == "ok":
            raise ConfigError(f"run {resume} finished ok: nothing to resume",
                              hint="resume a failed run (see `nbops runs`)")
        options = json.loads(prev.get("options") or "{}")
        notebook = notebook or prev["notebook"]
        params = {**json.loads(prev.get("params") or "{}"), **params}
        tags = tags or options.get("tags", [])
        skip_tags = skip_tags or options.get("skip_tags", [])
        kernel = kernel or options.get("kernel")
        chain = [resume, *options.get("chain", [])]
    if not notebook:
        raise ConfigError("no runbook given", hint="nbops run RUNBOOK.ipynb [-p KEY VALUE ...]")
    src = Path(notebook).expanduser().resolve()
    if not src.is_file():
        raise ConfigError(f"no notebook at {src}", hint="give the path of an .ipynb file")
    try:
        nb = nbformat.read(src, as_version=4)
    except Exception as exc:
        raise ConfigError(f"cannot read {src} as a notebook: {exc}", hint="is it an .ipynb file?") from exc
    _ensure_ids(nb)
    cells = [CellRef(i, c.id, list(c.get("metadata", {}).get("tags", [])), c.source)
             for i, c in enumerate(nb.cells)]

    keep: dict[str, str] = {}  # cell id -> why it was left out
    for ref, cell in zip(cells, nb.cells):
        if cell.cell_type != "code":
            continue
        why = _tag_reason(ref.tags, tags, skip_tags)
        if why:
            keep[ref.id] = why
    if resume:
        failed_at = _failed_cell_of(prev, cells)
        for ref, cell in zip(cells, nb.cells):
            if ref.index >= failed_at.index or cell.cell_type != "code" or ref.id in keep:
                continue
            if not set(ref.tags) & set(RESUME_TAGS):
                keep[ref.id] = f"completed in run {resume}"
        say(f"resuming run {resume} from {failed_at.label()} `{failed_at.head}`")
    skipped = [ref for ref in cells if ref.id in keep]
    for ref in skipped:
        say(f"  skip {ref.label()} `{ref.head}`: {keep[ref.id]}")
    _mark_skipped(nb, keep)

    run_id = new_run_id()
    out_dir = Path(out).expanduser().resolve() if out else paths.home() / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{src.stem}-{run_id}.ipynb"
    options = {"tags": tags, "skip_tags": skip_tags, "kernel": kernel, "chain": chain}
    started = time.time()
    store.record("runs", {
        "id": run_id, "notebook": str(src), "params": params, "started": started, "status": "running",
        "output": str(output), "user": _user(), "host": socket.gethostname(), "options": options,
        "resumed_from": resume, "skipped": [{"index": r.index, "id": r.id, "why": keep[r.id]} for r in skipped],
    })
    say(f"run {run_id}: {src.name} {_fmt_params(params)} -> {output}")
    env = {"NBOPS_RUN_ID": run_id, "NBOPS_RUN_CHAIN": ",".join([run_id, *chain]), "NBOPS_PROGRESS": "text",
           "NBOPS_HISTORY": str(store.path), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    error: str | None = None
    failed: CellRef | None = None
    by_id = {r.id: r for r in cells}
    try:
        with _environ(env), _engine_echo(say, by_id, len(cells)):
            _execute(nb, output, params, kernel=kernel, cwd=src.parent, timeout=cell_timeout)
        status = "ok"
    except Exception as exc:  # papermill raises PapermillExecutionError for a failing cell
        status = "failed"
        error, failed = _describe_failure(exc, output, by_id)
    except KeyboardInterrupt:
        _finish(store, run_id, output, "interrupted", "interrupted", None)
        raise
    finished = _finish(store, run_id, output, status, error, failed)
    result = RunResult(run_id=run_id, notebook=str(src), output=str(output), params=params, status=status,
                       started=started, finished=finished, failed_cell=failed, error=error, skipped=skipped,
                       resumed_from=resume)
    say(result.one_line())
    return result


def _finish(store: _history.History, run_id: str, output: Path, status: str, error: str | None,
            failed: CellRef | None) -> float:
    finished = time.time()
    if output.exists():
        _freeze(output)
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET finished=?, status=?, error=?, failed_cell=? WHERE id=?",
                     (finished, status, error,
                      json.dumps({"index": failed.index, "id": failed.id, "source": failed.head}) if failed else None,
                      run_id))
    return finished


def run_or_raise(notebook: str | os.PathLike[str] | None, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> RunResult:
    """:func:`run`, raising :class:`RunFailed` (one line, with the resume command) on failure."""
    result = run(notebook, params, **kwargs)
    if not result.ok:
        raise RunFailed(result.one_line(), hint=f"fix it, then `nbops run --resume {result.run_id}`", run=result)
    return result


def _tag_reason(cell_tags: Sequence[str], tags: Sequence[str], skip_tags: Sequence[str]) -> str | None:
    have = set(cell_tags)
    if have & set(skip_tags) and "parameters" not in have:
        return f"--skip-tags {','.join(sorted(have & set(skip_tags)))}"
    if tags and not have & (set(tags) | set(ALWAYS_TAGS)):
        return f"not tagged {','.join(tags)}"
    return None


def _ensure_ids(nb: nbformat.NotebookNode) -> None:
    """Give every cell an id (nbformat 4.5) so a failing cell can be found again in the source."""
    if (nb.nbformat, nb.get("nbformat_minor", 0)) < (4, 5):
        nb.nbformat_minor = 5
    used: set[str] = set()
    for i, cell in enumerate(nb.cells):
        cid = cell.get("id")
        if not cid or cid in used:
            cid = f"cell-{i}"
            cell["id"] = cid
        used.add(cid)


def _mark_skipped(nb: nbformat.NotebookNode, why: Mapping[str, str]) -> None:
    """Turn left-out code cells into raw cells (kept in the record, never executed)."""
    from nbformat.v4 import new_raw_cell

    for i, cell in enumerate(nb.cells):
        if cell.get("id") in why and cell.cell_type == "code":
            meta = dict(cell.get("metadata", {}))
            meta["nbops"] = {"skipped": why[cell.id], "cell_type": "code"}
            raw = new_raw_cell(cell.source, metadata=meta)
            raw["id"] = cell.id
            nb.cells[i] = raw


def _execute(nb: nbformat.NotebookNode, output: Path, params: Mapping[str, Any], *, kernel: str | None,
             cwd: Path, timeout: float | None) -> None:
    import papermill as pm
    from papermill.engines import papermill_engines

    if ENGINE_NAME not in papermill_engines._engines:
        papermill_engines.register(ENGINE_NAME, _engine_class())
    pm.execute_notebook(nb, str(output), parameters=dict(params), kernel_name=kernel, engine_name=ENGINE_NAME,
                        progress_bar=False, cwd=str(cwd), execution_timeout=timeout, start_timeout=120)


_ECHO: dict[str, Any] = {}


@contextlib.contextmanager
def _engine_echo(say: Callable[[str], Any], by_id: Mapping[str, CellRef], total: int) -> Iterator[None]:
    _ECHO.update(say=say, by_id=by_id, total=total)
    try:
        yield
    finally:
        _ECHO.clear()


def _engine_class():
    """A papermill engine that prints one text line per cell (the batch run's progress)."""
    from papermill.engines import NBClientEngine

    class _Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):  # noqa: ANN001
            say = _ECHO.get("say") or (lambda _line: None)
            by_id = _ECHO.get("by_id") or {}
            total = _ECHO.get("total") or len(nb_man.nb.cells)
            starts: dict[int, float] = {}
            cell_start, cell_complete = nb_man.cell_start, nb_man.cell_complete

            def label(cell, index) -> str:  # noqa: ANN001
                ref = by_id.get(cell.get("id"))
                if ref is None:
                    return "injected parameters" if "injected-parameters" in cell.metadata.get("tags", []) else f"cell +{index}"
                return f"[{ref.index + 1}/{total}] {ref.id} `{ref.head}`"

            def on_start(cell, cell_index=None, **kw):  # noqa: ANN001
                starts[cell_index] = time.monotonic()
                return cell_start(cell, cell_index, **kw)

            def on_complete(cell, cell_index=None, **kw):  # noqa: ANN001
                out = cell_complete(cell, cell_index, **kw)
                if cell.cell_type == "code":
                    took = time.monotonic() - starts.get(cell_index, time.monotonic())
                    failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
                    say(f"  {'FAIL' if failed else 'ok  '} {human_time(took):>7}  {label(cell, cell_index)}")
                return out

            nb_man.cell_start, nb_man.cell_complete = on_start, on_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return _Engine


def _describe_failure(exc: BaseException, output: Path, by_id: Mapping[str, CellRef]) -> tuple[str, CellRef | None]:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    text = " ".join(_strip_ansi(text).split())
    failed = None
    if output.exists():
        import nbformat

        try:
            executed = nbformat.read(output, as_version=4)
            for cell in executed.cells:
                pm_meta = cell.get("metadata", {}).get("papermill", {})
                if pm_meta.get("exception") or pm_meta.get("status") == "failed":
                    failed = by_id.get(cell.get("id"))
                    break
        except Exception:  # the record may be unreadable after a kernel crash; the error is enough
            failed = None
    return text, failed


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _failed_cell_of(prev: Mapping[str, Any], cells: Sequence[CellRef]) -> CellRef:
    info = json.loads(prev.get("failed_cell") or "null")
    if not info:
        raise ConfigError(f"run {prev['id']} has no failed cell recorded ({prev['status']})",
                          hint="run it again from the top with `nbops run`")
    for ref in cells:
        if ref.id == info["id"]:
            return ref
    if 0 <= info["index"] < len(cells):
        return cells[info["index"]]
    raise ConfigError(f"the failed cell {info['id']} of run {prev['id']} is no longer in the notebook",
                      hint="run it again from the top with `nbops run`")


def _freeze(path: Path) -> None:
    mode = path.stat().st_mode
    path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return str(os.getuid())


def _fmt_params(params: Mapping[str, Any]) -> str:
    return " ".join(f"-p {k} {v!r}" for k, v in params.items()) or "(no parameters)"


# -- reading the run log ---------------------------------------------------------------------------
def get_run(run_id: str, *, history: _history.History | None = None) -> dict[str, Any]:
    store = history or _history.default()
    df = store.frame("SELECT * FROM runs WHERE id=? OR id LIKE ?", (run_id, f"%{run_id}"))
    if df.empty:
        raise ConfigError(f"no run {run_id!r} in {store.path}", hint="list the runs with `nbops runs`")
    if len(df) > 1:
        raise ConfigError(f"run id {run_id!r} is ambiguous", hint="give more of the id (see `nbops runs`)")
    return {k: (None if v != v else v) if isinstance(v, float) else v for k, v in df.iloc[0].to_dict().items()}


def chain() -> list[str]:
    """The ids of this run and the runs it resumes (newest first); empty outside ``nbops run``."""
    ids = os.environ.get("NBOPS_RUN_CHAIN") or os.environ.get("NBOPS_RUN_ID") or ""
    return [i for i in ids.split(",") if i]


def recorded(table: str, *, history: _history.History | None = None, **where: Any) -> pd.DataFrame:
    """Rows of ``builds``/``pushes``/``deploys`` recorded by this run and the runs it resumes.

    Outside ``nbops run`` every row matches. ``where`` filters on columns (``image="app:1"``).
    """
    if table not in ("builds", "pushes", "deploys"):
        raise ConfigError(f"unknown table {table!r}", hint="use builds, pushes or deploys")
    store = history or _history.default()
    ids = chain()
    sql, args = f"SELECT * FROM {table} WHERE 1=1", []
    if ids:
        sql += f" AND run_id IN ({','.join('?' for _ in ids)})"
        args += ids
    for col, value in where.items():
        if not col.isidentifier():
            raise ConfigError(f"bad column {col!r}")
        sql += f" AND {col}=?"
        args.append(value)
    return store.frame(sql + " ORDER BY ts", args)


def last(table: str, *, history: _history.History | None = None, **where: Any) -> dict[str, Any]:
    """The latest successful row of :func:`recorded` as a dict; ConfigError when there is none."""
    df = recorded(table, history=history, **where)
    if "ok" in df.columns:
        df = df[df["ok"] == 1]
    if df.empty:
        raise ConfigError(f"nothing recorded in {table} for this run ({', '.join(chain()) or 'any run'})"
                          + (f" where {where}" if where else ""), hint="run the cell that records it first")
    return df.iloc[-1].to_dict()


@dataclass
class RunLog:
    """The run log (``nbops runs`` / ``%nbops runs``): one row per run, with links to the records."""

    frame: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.frame

    def __repr__(self) -> str:
        import pandas as pd

        if self.frame.empty:
            return "<RunLog: no runs yet — nbops run RUNBOOK.ipynb>"
        view = self.frame.copy()
        view["started"] = view["started"].dt.strftime("%Y-%m-%d %H:%M:%S")
        view["record"] = [Path(p).name if p else "" for p in view["output"]]
        cols = ["id", "notebook", "status", "started", "duration_s", "params", "summary", "error", "record"]
        for col in ("params", "summary", "error"):
            view[col] = [_cut(v, 60) for v in view[col]]
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            return view[cols].to_string(index=False)

    def _repr_html_(self) -> str:
        df = self.frame.copy()
        if df.empty:
            return "<div>no runs yet — <code>nbops run RUNBOOK.ipynb</code></div>"
        for col in ("notebook", "params", "summary", "error"):
            df[col] = [esc(v) if v is not None and v == v else "" for v in df[col]]
        df["record"] = [f'<a href="{esc(_rel(p))}">{esc(Path(p).name)}</a>' if p else "" for p in df["output"]]
        cols = ["id", "notebook", "status", "started", "duration_s", "params", "summary", "error", "record"]
        table = df[cols].to_html(index=False, border=0, classes="nbops-table", na_rep="", escape=False)
        return card("runs", {"runs": len(df), "failed": int((df["status"] == "failed").sum())}, table)


def _cut(value: Any, n: int) -> str:
    text = "" if value is None or value != value else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _rel(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def runs(*, history: _history.History | None = None, limit: int | None = 50) -> RunLog:
    """The run log with, per run, what its nbops calls did (builds, pushes, deploys) and its outcome."""
    import pandas as pd

    store = history or _history.default()
    df = store.frame("SELECT * FROM runs ORDER BY started DESC" + (f" LIMIT {int(limit)}" if limit else ""))
    if df.empty:
        return RunLog(df)
    ids = list(df["id"])
    marks = ",".join("?" for _ in ids)
    builds = store.frame(f"SELECT run_id, tags, image_id, size, ok FROM builds WHERE run_id IN ({marks}) ORDER BY ts", ids)
    pushes = store.frame(f"SELECT run_id, ref, digest, ok FROM pushes WHERE run_id IN ({marks}) ORDER BY ts", ids)
    deploys = store.frame(f"SELECT run_id, service, image, outcome FROM deploys WHERE run_id IN ({marks}) ORDER BY ts", ids)
    summary = {i: [] for i in ids}
    for r in builds.itertuples():
        tag = (json.loads(r.tags or "[]") or [str(r.image_id)[7:19]])[0]
        summary[r.run_id].append(f"built {tag} {str(r.image_id)[7:19]}" if r.ok else f"build {tag} FAILED")
    for r in pushes.itertuples():
        summary[r.run_id].append(f"pushed {r.ref}@{str(r.digest)[:19]}" if r.ok else f"push {r.ref} FAILED")
    for r in deploys.itertuples():
        summary[r.run_id].append(f"deployed {r.service} {r.outcome}")
    df["duration_s"] = (df["finished"] - df["started"]).round(1)
    df["started"] = pd.to_datetime(df["started"], unit="s", utc=True)
    df["builds"] = [int((builds["run_id"] == i).sum()) for i in ids]
    df["pushes"] = [int((pushes["run_id"] == i).sum()) for i in ids]
    df["deploys"] = [int((deploys["run_id"] == i).sum()) for i in ids]
    df["summary"] = ["; ".join(summary[i]) for i in ids]
    df["notebook"] = [Path(p).name for p in df["notebook"]]
    return RunLog(df)

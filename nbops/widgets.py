"""Notebook pickers that feed ``%deploy``: nodes (→ placement constraints) and orchestrators.

    picker = NodePicker()            # a table of the swarm's nodes and a multi-select
    %deploy web:1 --name web --from picker

Swarm ANDs its constraints, so "one of these nodes" is written as ``node.hostname!=X`` for every node
left out (one node picked: ``node.hostname==X``).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ._display import esc, human_size
from .engine import Engine


def node_rows(engine: Engine) -> list[dict[str, Any]]:
    """Nodes as rows: hostname, role, availability, state, engine version, labels, cpus, memory."""
    sw = engine.info.get("Swarm") or {}
    if sw.get("LocalNodeState") == "active" and sw.get("ControlAvailable"):
        from .deploy.swarm import swarm_nodes

        return [{"hostname": n["hostname"], "role": n["role"] + (" (leader)" if n["leader"] else ""),
                 "availability": n["availability"], "state": n["state"], "engine": n["engine"],
                 "labels": ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())),
                 "cpus": n["cpus"], "memory": human_size(n["memory"]), "address": n["address"]}
                for n in sorted(swarm_nodes(engine).values(), key=lambda n: n["hostname"] or "")]
    info = engine.info
    return [{"hostname": info.get("Name"), "role": "engine (no swarm)", "availability": "active", "state": "ready",
             "engine": info.get("ServerVersion"), "labels": ", ".join(info.get("Labels") or []),
             "cpus": info.get("NCPU"), "memory": human_size(info.get("MemTotal")), "address": engine.address}]


def constraints_for(picked: list[str], all_hosts: list[str]) -> list[str]:
    """Placement constraints that allow exactly the picked hosts (none picked or all: no constraint)."""
    picked = [h for h in all_hosts if h in set(picked)]
    if not picked or len(picked) == len(all_hosts):
        return []
    if len(picked) == 1:
        return [f"node.hostname=={picked[0]}"]
    return [f"node.hostname!={h}" for h in all_hosts if h not in picked]


class NodePicker(w.VBox):
    """The nodes as a table; pick one or many → :attr:`constraints` for ``%deploy --from``."""

    def __init__(self, engine: Engine | None = None, rows: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        self.rows = rows if rows is not None else node_rows(engine or Engine.connect())
        self.hosts = [r["hostname"] for r in self.rows]
        self.table = w.HTML(_table(self.rows))
        self.select = w.SelectMultiple(options=[(f"{r['hostname']} · {r['role']} · {r['availability']}", r["hostname"])
                                                for r in self.rows], rows=min(max(len(self.rows), 2), 8),
                                       description="nodes", layout=w.Layout(width="60%"))
        self.select.add_class("nbops-node-picker")
        self.result = w.HTML()
        self.result.add_class("nbops-node-constraints")
        self.select.observe(self._changed, names="value")
        super().__init__([self.table, self.select, self.result], **kwargs)
        self._changed()

    def _changed(self, change: Any = None) -> None:
        cons = self.constraints
        self.result.value = ("<code>" + esc(" & ".join(cons)) + "</code>") if cons else "<i>any node</i>"

    @property
    def value(self) -> tuple[str, ...]:
        return tuple(self.select.value)

    @value.setter
    def value(self, hosts: tuple[str, ...] | list[str]) -> None:
        self.select.value = tuple(hosts)

    @property
    def constraints(self) -> list[str]:
        return constraints_for(list(self.select.value), self.hosts)

    def deploy_options(self) -> dict[str, Any]:
        return {"constraints": self.constraints}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


class OrchestratorPicker(w.VBox):
    """The orchestrators, what each needs and whether this engine has it; feeds ``%deploy --from``."""

    def __init__(self, engine: Engine | None = None, **kwargs: Any) -> None:
        from .deploy import load_backends

        engine = engine or Engine.connect()
        self.choices = []
        for name, cls in sorted(load_backends().items()):
            ok, why = cls.available(engine)
            self.choices.append({"name": name, "needs": cls.needs, "available": ok, "why": why})
        usable = [c["name"] for c in self.choices if c["available"]]
        self.dropdown = w.Dropdown(options=[(c["name"] + ("" if c["available"] else " (unavailable)"), c["name"])
                                            for c in self.choices],
                                   value="swarm" if "swarm" in usable else (usable[0] if usable else None),
                                   description="orchestrator")
        self.dropdown.add_class("nbops-orchestrator-picker")
        self.help = w.HTML()
        self.help.add_class("nbops-orchestrator-help")
        self.dropdown.observe(self._changed, names="value")
        super().__init__([self.dropdown, self.help], **kwargs)
        self._changed()

    def _changed(self, change: Any = None) -> None:
        c = next((c for c in self.choices if c["name"] == self.dropdown.value), None)
        if c:
            state = "available" if c["available"] else f"unavailable: {c['why']}"
            self.help.value = f"<b>{esc(c['name'])}</b> needs {esc(c['needs'])} — <i>{esc(state)}</i>"

    @property
    def value(self) -> str | None:
        return self.dropdown.value

    @value.setter
    def value(self, name: str) -> None:
        self.dropdown.value = name

    def deploy_options(self) -> dict[str, Any]:
        return {"orchestrator": self.value}


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<i>no nodes</i>"
    cols = list(rows[0])
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{esc(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table class='nbops-nodes'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

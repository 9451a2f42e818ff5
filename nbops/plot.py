"""Every nbops plot: takes a DataFrame (a result's ``to_frame()``), keyword-only options, ``ax=None``;
returns the matplotlib Axes. matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from typing import Any


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def build_profile(df, *, ax: Any = None, title: str | None = None) -> Any:
    """Per-instruction build time (bars) with cache hits marked, and layer size on a second axis."""
    import numpy as np

    rows = df.reset_index(drop=True)
    ax = _axes(ax, (9, 0.45 * max(len(rows), 3) + 1.2))
    multi = "stage" in rows and rows["stage"].nunique() > 1  # multi-stage: say which stage each step is in
    labels = [_short(f"{r.step}. " + (f"[{r.stage}] " if multi else "") + str(r.instruction), 52)
              for r in rows.itertuples()]
    raw_durations = rows["duration_s"].astype(float)
    durations = raw_durations.fillna(0.0).to_numpy()
    cached = rows["cached"].fillna(False).astype(bool).to_numpy()
    y = np.arange(len(rows))
    colors = ["#9ecae1" if c else "#3182bd" for c in cached]
    ax.barh(y, durations, color=colors)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("build time (s)")
    from ._display import human_size

    sizes = rows["layer_size"].astype(float).fillna(0.0).to_numpy()
    for yi, (d, s, c, instr, missing) in enumerate(zip(durations, sizes, cached, rows["instruction"],
                                                        raw_durations.isna())):
        if str(instr).upper().startswith("FROM"):
            note = f"base image {human_size(s)}"
        elif missing:
            note = "config only (no layer)" if s == 0 else f"+{human_size(s)}"
        else:
            note = ("cached" if c else f"{d:.2f} s") + (f" · +{human_size(s)}" if s > 0 else " · empty layer")
        ax.annotate(note, (d, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max(float(durations.max(initial=0.0)) * 1.35, 0.5))
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#3182bd", label="built"), Patch(color="#9ecae1", label="cache hit")],
              loc="lower right", fontsize=8)
    ax.set_title(title or "Build profile: time per instruction (+ layer size added)")
    return ax


def layer_sizes(df, *, ax: Any = None, title: str | None = None) -> Any:
    """Layer size added by each instruction (MB)."""
    rows = df.reset_index(drop=True)
    ax = _axes(ax, (9, 0.45 * max(len(rows), 3) + 1.2))
    sizes = rows["layer_size"].astype(float).fillna(0.0) / 1e6
    ax.barh(range(len(rows)), sizes, color="#31a354")
    ax.set_yticks(range(len(rows)), [_short(str(i), 48) for i in rows["instruction"]])
    ax.invert_yaxis()
    ax.set_xlabel("layer size (MB)")
    ax.set_title(title or "Layer size per instruction")
    return ax


STATE_COLORS = {
    "new": "#d9d9d9", "pending": "#d9d9d9", "assigned": "#bdbdbd", "accepted": "#bdbdbd", "preparing": "#9ecae1",
    "ready": "#9ecae1", "starting": "#fdae6b", "running": "#31a354", "complete": "#756bb1", "shutdown": "#969696",
    "failed": "#de2d26", "rejected": "#a50f15", "remove": "#636363", "orphaned": "#636363",
}


def rollout_timeline(df, *, ax: Any = None, title: str | None = None, end: float | None = None,
                     marks: dict[str, float] | None = None) -> Any:
    """Tasks as rows (grouped by slot, old above new), time across, each span coloured by the task's
    state; spans while the task is unhealthy are hatched.

    ``df`` is a rollout frame (one row per task state or health change: ts, task, slot, node, state,
    health). ``marks`` adds labelled vertical lines (e.g. ``DeployResult.marks``: apply, update,
    rollback, done).
    """
    from matplotlib.patches import Patch

    rows = df.sort_values("ts")
    ax = _axes(ax, (10, 0.5 * max(rows["task"].nunique(), 2) + 1.8))
    if rows.empty:
        ax.set_title(title or "Rollout timeline (no events)")
        return ax
    marks = dict(marks or {})
    t0 = min([float(rows["ts"].min()), *marks.values()])
    t_end = float(end if end is not None else max([float(rows["ts"].max()), *marks.values()]) + 1.0)
    order = (rows.groupby("task").agg(first=("ts", "min"), slot=("slot", "first"), node=("node", "last"))
             .assign(slot_key=lambda d: d["slot"].fillna(-1)).sort_values(["slot_key", "first"]))
    for i, (task, meta) in enumerate(order.iterrows()):
        evs = rows[rows["task"] == task]
        times = list(evs["ts"].astype(float)) + [t_end]
        for (_, ev), start, stop in zip(evs.iterrows(), times[:-1], times[1:]):
            color = STATE_COLORS.get(str(ev["state"]), "#bdbdbd")
            hatch = "//" if ev.get("health") == "unhealthy" else None
            ax.broken_barh([(start - t0, max(stop - start, 0.05))], (i - 0.4, 0.8), facecolors=color,
                           hatch=hatch, edgecolor="white")
        slot = meta["slot"]
        label = f"slot {int(slot)} · {str(task)[:6]}" if slot == slot and slot is not None else str(task)[:6]
        ax.text(-0.01, i, label, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=8)
    for k, (name, ts) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        ax.axvline(ts - t0, color="black", ls="--", lw=1)
        ax.text(ts - t0, -0.55 - 0.45 * (k % 2), f" {name}", fontsize=8, ha="left", va="center")
    ax.set_yticks([])
    ax.set_ylim(len(order) - 0.5, -1.3)
    ax.set_xlim(-0.2, t_end - t0)
    ax.set_xlabel("seconds since the rollout started")
    used = [s for s in STATE_COLORS if s in set(rows["state"])]
    handles = [Patch(color=STATE_COLORS[s], label=s) for s in used]
    if (rows["health"] == "unhealthy").any():
        handles.append(Patch(facecolor="white", edgecolor="#333", hatch="//", label="unhealthy"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "Rollout timeline: task state over time")
    return ax


def image_hierarchy(df, *, ax: Any = None, title: str | None = None) -> Any:
    """Base-image tree: each image right of the image it is built on, boxes coloured by how many images
    an update of it would rebuild; edges say how many layers the child shares with its parent.

    ``df`` is a hierarchy frame (``nbops.hierarchy.hierarchy(engine).to_frame()``).
    """
    import matplotlib as mpl

    rows = df.reset_index(drop=True)
    ax = _axes(ax, (10, 0.55 * max(len(rows), 3) + 1.2))
    if rows.empty:
        ax.set_title(title or "Base-image hierarchy (no images)")
        ax.set_axis_off()
        return ax
    kids: dict[Any, list[int]] = {}
    for i, r in rows.iterrows():
        kids.setdefault(r["parent_id"] if isinstance(r["parent_id"], str) else None, []).append(i)
    order: list[int] = []

    def walk(i: int) -> None:
        order.append(i)
        for k in sorted(kids.get(rows.at[i, "image_id"], []), key=lambda k: str(rows.at[k, "image"])):
            walk(k)

    for root in sorted(kids.get(None, []), key=lambda k: str(rows.at[k, "image"])):
        walk(root)
    y = {i: n for n, i in enumerate(order)}
    x = {i: float(rows.at[i, "depth"]) for i in order}
    cmap = mpl.colormaps["YlOrRd"]
    top = max(int(rows["dependents"].max()), 1)
    for i in order:
        pid = rows.at[i, "parent_id"]
        if isinstance(pid, str):
            p = int(rows.index[rows["image_id"] == pid][0])
            ax.plot([x[p] + 0.05, x[p] + 0.05, x[i]], [y[p] + 0.25, y[i], y[i]], color="#969696", lw=1, zorder=1)
            ax.text(x[p] + 0.1, y[i] - 0.12, f"shares {int(rows.at[i, 'shared_layers'])} layers", fontsize=7,
                    color="#636363", va="bottom")
        dep = int(rows.at[i, "dependents"])
        own = int(rows.at[i, "own_layers"])
        from ._display import human_size

        sign = "+" if isinstance(pid, str) else ""
        label = (f"{_short(str(rows.at[i, 'image']), 34)}\n{sign}{own} layer{'s' if own != 1 else ''}, "
                 f"{sign}{human_size(rows.at[i, 'own_size'])}" + (f" · rebuilds {dep}" if dep else ""))
        ax.text(x[i], y[i], label, fontsize=8, va="center", ha="left", zorder=2,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": cmap(0.15 + 0.75 * dep / top),
                      "edgecolor": "#636363"})
    ax.set_xlim(-0.2, max(x.values()) + 2.2)
    ax.set_ylim(len(order) - 0.4, -0.8)
    ax.set_axis_off()
    ax.set_title(title or "Base-image hierarchy: updating an image rebuilds everything below it")
    return ax


def probe_timeline(df, *, ax: Any = None, title: str | None = None, t0: float | None = None,
                   marks: dict[str, float] | None = None) -> Any:
    """Probe requests per second during a rollout: successes stacked under failures."""
    rows = df.reset_index(drop=True)
    ax = _axes(ax, (10, 2.6))
    ax.bar(rows["second"], rows["ok"], color="#31a354", width=0.9, label="ok")
    ax.bar(rows["second"], rows["failed"], bottom=rows["ok"], color="#de2d26", width=0.9, label="failed")
    top = ax.get_ylim()[1]
    for k, (name, ts) in enumerate(sorted((marks or {}).items(), key=lambda kv: kv[1])):
        if t0 is not None:
            ax.axvline(ts - t0, color="black", ls="--", lw=1)
            ax.text(ts - t0, top * (0.97 - 0.1 * (k % 2)), f" {name}", fontsize=8, va="top")
    ax.set_xlabel("seconds since the probe started")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    total, failed = int(rows["requests"].sum()), int(rows["failed"].sum())
    ax.set_title(title or f"Probe during the rollout: {total} requests, {failed} failed")
    return ax


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def size_trend(df, *, ax: Any = None, title: str | None = None, top: int = 10) -> Any:
    """Image size over versions, stacked by layer (the frame of ``nbops.layers.trend(name)``).

    Each band is one layer position (bottom layer first), labelled with the instruction that made it
    in the latest version; beyond ``top`` bands, the smallest layers are summed into "other layers".
    """
    import numpy as np

    ax = _axes(ax, (10, 5))
    if df.empty:
        ax.set_title(title or "Image size over versions (no recorded builds)")
        return ax
    order = df.drop_duplicates("build_id")[["build_id", "version"]].reset_index(drop=True)
    data = df.assign(layer=df["layer"].fillna(-1).astype(int))
    table = data.pivot_table(index="build_id", columns="layer", values="size", aggfunc="sum", fill_value=0)
    table = table.reindex(order["build_id"]).fillna(0) / 1e6
    latest = data[data["build_id"] == order["build_id"].iloc[-1]].set_index("layer")["instruction"].to_dict()
    keep = list(table.max().sort_values(ascending=False).index[:top])
    bands = [c for c in table.columns if c in keep]
    rest = table.drop(columns=bands).sum(axis=1)
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    colors = _band_colors(len(bands) + 1)
    for i, col in enumerate(bands):
        label = "build size (not analysed)" if col < 0 else _short(f"L{col}: {latest.get(col) or '?'}", 50)
        ax.bar(x, table[col].to_numpy(), bottom=bottom, color=colors[i], label=label, width=0.8)
        bottom += table[col].to_numpy()
    if rest.any():
        ax.bar(x, rest.to_numpy(), bottom=bottom, color="#d9d9d9", label="other layers", width=0.8)
        bottom += rest.to_numpy()
    labels = [v if len(v) <= 24 else "…" + v[-23:] for v in map(str, order["version"])]  # the tag is at the end
    step = max(1, len(labels) // 25)
    ax.set_xticks(x[::step], labels[::step], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("size (MB)")
    ax.set_xlabel("version (oldest first)")
    ax.set_xlim(-0.6, len(x) - 0.4)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title="layer (latest version), top first", title_fontsize=8)
    ax.set_title(title or "Image size over versions, by layer")
    return ax


def _band_colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]

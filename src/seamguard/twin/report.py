"""The pictures and the page of ``seamguard simulate``: PNG plots and a self-contained report.html.

Three plots answer the three questions an operator asks of a policy comparison: how much useful
work survived over time (goodput timeline), where the rest of the reserved time went (lost-time
buckets), and what each policy did to the domain the scenario's fault hit (state timeline).
The page embeds them as data URIs so it can be mailed or attached to a ticket as one file.

matplotlib is an optional extra (``pip install 'seamguard[plots]'``), imported by the functions that
draw: ``require_plots`` says which extra is missing before a campaign runs for nothing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seamguard.errors import InputError
from seamguard.model.states import State
from seamguard.twin.accounting import LOST_BUCKETS
from seamguard.twin.results import RunResult
from seamguard.twin.scenario import Scenario
from seamguard.twin.sim import DRAINED_CODE, REPAIR_CODE

POLICY_COLOURS = {"binary": "#7f7f7f", "young-daly": "#1f77b4", "seamguard": "#2ca02c", "oracle": "#d62728",
                  "seamguard-remote": "#98df8a", "young-daly-tiered": "#aec7e8",
                  "seamguard-nofirewall": "#bcbd22"}  # fmt: skip
BUCKET_COLOURS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")
# One colour per focus-grid code: the seven states, then drained and in repair.
STATE_CODES: tuple[tuple[int, str, str], ...] = (
    (int(State.HEALTHY), "healthy", "#d9f0d3"),
    (int(State.DEGRADED), "degraded", "#fee08b"),
    (int(State.RECOVERY_UNSAFE), "recovery_unsafe", "#fdae61"),
    (int(State.QUARANTINE), "quarantine", "#f46d43"),
    (int(State.HARMFUL), "harmful", "#a50026"),
    (int(State.FAILED), "failed", "#000000"),
    (int(State.UNKNOWN), "unknown", "#bdbdbd"),
    (DRAINED_CODE, "drained", "#4575b4"),
    (REPAIR_CODE, "in repair", "#313695"),
)
PLOTS = ("goodput_timeline.png", "lost_time.png", "state_timeline.png")


def require_plots(where: str = "seamguard simulate") -> None:
    """``InputError`` naming the extra when matplotlib cannot be imported (it is not in the core)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(
            where, "matplotlib is not installed (the plots of report.html): pip install 'seamguard[plots]'"
        ) from None


def _by_policy(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = {}
    for r in results:
        out.setdefault(r.policy, []).append(r)
    return out


def plot_goodput(results: Sequence[RunResult], path: Path) -> None:
    """Top: work done per reserved GPU-second in each interval (the pace, rollback not yet
    known). Bottom: ETTR so far, useful work by then (saved, or done since the last save and not
    yet lost) over time reserved by then: a rollback shows as a drop, and policies drift apart
    over a long run."""
    require_plots()
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend, no display needed

    fig = Figure(figsize=(9, 6.5))
    pace, kept = fig.subplots(2, 1, sharex=True)
    for policy, runs in _by_policy(results).items():
        hours = (runs[0].timeline_t - runs[0].start) / 3600.0
        colour = POLICY_COLOURS.get(policy)
        for ax, curves in (
            (pace, [r.timeline_goodput for r in runs]),
            (kept, [r.timeline_ettr for r in runs]),
        ):
            ax.plot(hours, _nanmean(np.vstack(curves)), label=policy, color=colour, linewidth=1.4)
    pace.set_ylabel("work per reserved GPU-second")
    pace.set_title("goodput over time (mean over seeds)")
    pace.set_ylim(bottom=0)
    kept.set_ylabel("ETTR so far")
    kept.set_xlabel("hours into the scenario")
    for ax in (pace, kept):
        ax.grid(alpha=0.3)
    pace.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _nanmean(curves: np.ndarray) -> np.ndarray:
    """Per bin, the mean over the seeds that have a value (bins nobody reserved are NaN)."""
    seen = np.isfinite(curves).sum(axis=0)
    out: np.ndarray = np.where(seen > 0, np.nansum(curves, axis=0) / np.maximum(seen, 1), np.nan)
    return out


def plot_lost_time(summary: dict[str, Any], path: Path) -> None:
    require_plots()
    from matplotlib.figure import Figure

    names = list(summary["policies"])
    fig = Figure(figsize=(9, 0.9 + 0.6 * len(names)))
    ax = fig.subplots()
    left = np.zeros(len(names))
    for bucket, colour in zip(LOST_BUCKETS, BUCKET_COLOURS, strict=True):
        share = np.array([100.0 * (summary["policies"][p]["lost_share"][bucket] or 0.0) for p in names])
        ax.barh(names, share, left=left, color=colour, label=bucket.replace("_", " "))
        left += share
    ax.set_xlabel("% of reserved GPU time lost")
    ax.set_title("where the time that was not useful went (mean over seeds)")
    ax.invert_yaxis()
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(names) < 3 else -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


# How each kind of action is marked on the state timeline: node-level ones on their node's row,
# the rest (a domain islanded, a job checkpointed or a rank moved) along the row's top edge.
MARKS: dict[str, tuple[str, str]] = {
    "drain_node": ("v", "drain"), "cordon_node": ("v", "drain"), "island_domain": ("s", "island"),
    "resume_node": ("^", "release"), "replace_rank": ("o", "rank moved"), "checkpoint_now": ("|", "checkpoint now"),
    "switch_checkpoint_target": ("x", "checkpoint target"), "reroute": ("D", "reroute"),
}  # fmt: skip


def timeline_marks(run: RunResult) -> list[tuple[float, float, str]]:
    """(hours, row, kind) for each action carried out in the focus domain: drains and releases of
    any policy (``drains``: a drain by a person or a repair is not the policy's), and seamguard's
    other actions (``acted``), so a reader sees what each policy did, not only the states."""
    row = {node: i for i, node in enumerate(run.focus_nodes)}
    out: list[tuple[float, float, str]] = []
    acted_drains = {(t, target) for t, kind, target in run.acted if kind in ("drain_node", "cordon_node")}
    for d in run.drains:
        if d.actor == "policy" and d.node in row and (d.t, d.node) not in acted_drains:
            out.append(((d.t - run.start) / 3600.0, row[d.node] + 0.5, "drain_node"))
    for t, kind, target in run.acted:
        if kind not in MARKS:
            continue
        node = (
            target
            if target.startswith("node/")
            else f"node/{target.split('/')[1]}"
            if target.startswith("gpu/")
            else ""
        )
        if node in row:
            out.append(((t - run.start) / 3600.0, row[node] + 0.5, kind))
        elif not node:  # a domain or a job: along the top edge
            out.append(((t - run.start) / 3600.0, 0.0, kind))
    return out


def plot_states(results: Sequence[RunResult], path: Path) -> None:
    """Seed 0 (the first seed) of each policy: the nodes of the affected domain over time."""
    require_plots()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    first = _by_policy(results)
    runs = [rs[0] for rs in first.values()]
    codes = [c for c, _, _ in STATE_CODES]
    cmap = ListedColormap([colour for _, _, colour in STATE_CODES])
    norm = BoundaryNorm([*(c - 0.5 for c in codes), codes[-1] + 0.5], cmap.N)
    fig = Figure(figsize=(9, 1.2 + 1.6 * len(runs)))
    axes = fig.subplots(len(runs), 1, squeeze=False, sharex=True)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        span_h = (r.end - r.start) / 3600.0
        ax.imshow(r.focus_states, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                  extent=(0.0, span_h, len(r.focus_nodes), 0))  # fmt: skip
        ax.set_ylabel(f"{r.policy}\nnodes", fontsize=8)
        ax.set_yticks([])
        for kind, (marker, _) in MARKS.items():
            pts = [(h, y) for h, y, k in timeline_marks(r) if k == kind]
            if pts:
                ax.scatter([h for h, _ in pts], [y for _, y in pts], marker=marker, s=18, c="#111111",
                           linewidths=0.8, zorder=3, clip_on=False)  # fmt: skip
    axes[-1, 0].set_xlabel("hours into the scenario")
    title = runs[0].focus_title if runs else ""
    fig.suptitle(f"state of the affected domain ({title}), seed {runs[0].seed if runs else '-'}", fontsize=10)
    marks = [Line2D([], [], marker=m, linestyle="", color="#111111", label=label)
             for m, label in dict.fromkeys(MARKS.values())]  # fmt: skip
    fig.legend(handles=[*(Patch(color=c, label=label) for _, label, c in STATE_CODES), *marks], ncol=6,
               fontsize=7, loc="lower center", title="states; marks: what each policy carried out (on a node's row;"
               " domains and jobs along the top)", title_fontsize=7)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _table(summary: dict[str, Any]) -> str:
    head = ("policy", "ETTR (95% CI)", "useful GPU-h", "false quarantines", "missed gray", "median lead",
            "detected")  # fmt: skip
    rows = []
    for name, p in summary["policies"].items():
        lo, hi = p["ettr"]["ci95"]
        lead = p["median_detection_lead_s"]
        cells = (
            name, f"{p['ettr']['mean']:.4f} ({lo:.4f}–{hi:.4f})", f"{p['useful_gpu_hours']:,.0f}",
            str(p["false_quarantines"]), str(p["missed_gray_failures"]),
            "–" if lead is None else f"{lead / 60:+.1f} min", f"{p['detected_faults']}/{p['faults']}",
        )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _buckets_table(summary: dict[str, Any]) -> str:
    th = "".join(f"<th>{html.escape(b.replace('_', ' '))}</th>" for b in LOST_BUCKETS)
    rows = []
    for name, p in summary["policies"].items():
        cells = "".join(
            f"<td>{_fmt(p['lost_hours'][b], ',.1f')} h ({100 * (p['lost_share'][b] or 0):.2f}%)</td>"
            for b in LOST_BUCKETS
        )
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><thead><tr><th>policy</th>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _observed_note(summary: dict[str, Any]) -> str:
    if summary.get("observation") != "windows":
        return ""
    seen = ", ".join(
        f"{html.escape(name)} {p['observed_node_days']:,.0f}" for name, p in summary["policies"].items()
    )
    total = next(iter(summary["policies"].values()))["node_days"]
    return (
        f" Observed in windows around the faults (docs/twin.md): of {total:,.0f} node-days per run the"
        f" policies saw telemetry for {seen}."
    )


def write_report(
    scenario: Scenario, summary: dict[str, Any], results: Sequence[RunResult], out: Path
) -> list[Path]:
    """The three PNGs and report.html in ``out``; returns the paths written."""
    paths = [out / name for name in PLOTS]
    plot_goodput(results, paths[0])
    plot_lost_time(summary, paths[1])
    plot_states(results, paths[2])
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode("ascii")}"></figure>'
        for p in paths
    )
    sources = "".join(f"<li>{html.escape(s)}</li>" for s in scenario.sources)
    seeds = ", ".join(str(s) for s in summary["seeds"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seamguard simulate: {html.escape(scenario.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(scenario.name)}</h1>
<p>{html.escape(summary["description"])}</p>
<p class="note">{summary["gpus"]:,} GPUs, {summary["duration_h"]:g} h, seeds {html.escape(seeds)}.
ETTR is useful (surviving, unslowed) GPU time over reserved GPU time; the lost-time buckets and ETTR
sum to 100% of reserved time. Counts are totals over all seeds.{_observed_note(summary)}</p>
<h2>Policies</h2>{_table(summary)}
<h2>Lost time</h2>{_buckets_table(summary)}
{images}
<h2>Where the numbers come from</h2><ul>{sources}</ul>
</body></html>
"""
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    return [*paths, report]

"""``seamguard ctl``: a running daemon's state and the operator's controls, from a terminal.

It speaks the daemon's HTTP API (``docs/operating.md``) with a bearer token, so what a person can
do here is exactly what the console and the API allow that token: a viewer reads, an operator
also pauses, pins, sets maintenance windows, vouches repairs and approves. The daemon journals every control under
the token's name with the reason given here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamguard.timeparse import format_time

ctl_app = typer.Typer(help="A running daemon's state and the operator's controls (docs/operating.md).")
console = Console(soft_wrap=True)

Url = Annotated[str, typer.Option("--url", envvar="SEAMGUARD_URL", help="the daemon's API")]
Token = Annotated[str, typer.Option("--token", envvar="SEAMGUARD_TOKEN", help="bearer token (or SEAMGUARD_TOKEN)", show_default=False)]  # fmt: skip
CaFile = Annotated[str, typer.Option("--ca", envvar="SEAMGUARD_CA", help="CA bundle for an https daemon", show_default=False)]  # fmt: skip
For = Annotated[str, typer.Option("--for", help="how long it stands: 90s, 30m, 4h, 2d (at most 7d)")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="why: journaled with your name")]
DEFAULT_URL = "http://127.0.0.1:8470"
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``4h``, ``2d`` in seconds; a clear error otherwise."""
    got = DURATION.fullmatch(text.strip().lower())
    if got is None:
        raise typer.BadParameter(f"{text!r}: expected a number and a unit, such as 90s, 30m, 4h or 2d")
    return float(got.group(1)) * UNIT_S[got.group(2)]


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print("[red]error:[/] " + escape(message))
    raise typer.Exit(code)


def _call(method: str, url: str, token: str, path: str, ca: str = "", body: dict[str, Any] | None = None,
          params: dict[str, Any] | None = None) -> Any:  # fmt: skip
    if not token:
        _fail("no token: give --token or set SEAMGUARD_TOKEN (seamguard token create NAME --role viewer)", 2)
    verify: bool | str = ca or True
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=body, params=params, verify=verify,
                             headers={"Authorization": f"Bearer {token}"}, timeout=40, trust_env=False)  # fmt: skip
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the daemon at {url}: {exc} (is `seamguard run --listen` running there?)", 2)
    try:
        data = resp.json()
    except ValueError:
        data = {"detail": resp.text[:500]}
    if resp.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else data
        _fail(f"{method} {path}: {resp.status_code}: {detail}")
    return data


def _when(ts: object) -> str:
    return format_time(float(ts)) if isinstance(ts, (int, float)) else "-"


def _counts(named: object) -> str:
    return ", ".join(f"{n} {s}" for s, n in named.items()) if isinstance(named, dict) and named else "-"


def _controls_table(controls: list[dict[str, Any]]) -> Table:
    t = Table(title="Operator controls in force", title_justify="left")
    for col in ("control", "scope", "by", "until", "reason"):
        t.add_column(col)
    for c in controls:
        t.add_row(
            f"{c['verb']}{' ' + c['state'] if c.get('state') else ''}",
            c["target"],
            c["by"],
            _when(c["until"]),
            c["reason"],
        )
    return t


def _awaiting_table(awaiting: list[dict[str, Any]]) -> Table:
    t = Table(title="Awaiting approval (seamguard ctl approve KEY)", title_justify="left")
    for col in ("key", "action", "target", "actuator", "until"):
        t.add_column(col, overflow="fold")
    for w in awaiting:
        t.add_row(w["key"], w["kind"], w["target"], w["actuator"], _when(w["expires"]))
    return t


@ctl_app.command()
def status(url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "") -> None:
    """Mode, leader, storm brake, breakers, what is held and queued, controls and approvals."""
    st = _call("GET", url, token, "/v1/status", ca)
    mode = st.get("mode")
    console.print(
        f"mode [bold]{mode}[/]"
        + ("" if mode == "act" else " (advise: nothing is touched; held means would hold)")
    )
    lead = st.get("leadership")
    console.print(f"leader {lead['leader']} (epoch {lead['epoch']})" if lead else "single replica")
    console.print(f"storm brake: {st.get('storm_brake') or 'off'}", markup=False)
    console.print(f"last tick {_when(st.get('now'))} · nodes {st.get('nodes')} · jobs {st.get('jobs')}")
    console.print(f"not healthy: {_counts(st.get('non_healthy'))}")
    console.print(
        f"breakers: {_counts({v: k for k, v in (st.get('breakers') or {}).items()}) if st.get('breakers') else 'no enforcing actuator'}"
    )
    console.print(
        f"held out of service: {len(st.get('quarantined') or [])} · queued by the budgets: {len(st.get('queued') or [])}"
    )
    for notice in st.get("active_notices") or []:
        console.print("[yellow]source in trouble:[/] " + escape(str(notice)))
    if st.get("controls"):
        console.print(_controls_table(list(st["controls"])))
    if st.get("awaiting"):
        console.print(_awaiting_table(list(st["awaiting"])))


@ctl_app.command()
def nodes(
    state: Annotated[str, typer.Option(help="comma-separated states (default: every unwell one; add unknown for the silent)")] = "",
    limit: int = 200, url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "",
) -> None:  # fmt: skip
    """Nodes by their one state (a node is as unwell as its worst GPU), most severe first."""
    got = _call("GET", url, token, "/v1/nodes", ca, params={"state": state, "limit": limit})
    t = Table(
        title=f"{got['matched']} node(s)" + (" (first shown)" if got["truncated"] else ""),
        title_justify="left",
    )
    for col in ("node", "state", "held", "rack", "GPUs"):
        t.add_column(col)
    for n in got["nodes"]:
        t.add_row(n["id"], n["state"], "yes" if n["held"] else "", n["rack"], _counts(n["gpus"]))
    console.print(t)


@ctl_app.command()
def explain(entity: str, url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "") -> None:
    """One entity now: its state, why, the controls on it and what was done to it lately."""
    e = _call("GET", url, token, "/v1/entities/" + entity.strip("/"), ca)
    console.print(f"[bold]{e['id']}[/] {e['state']} (engine: {e['engine_state']} since {_when(e['since'])})")
    s = e["scores"]
    console.print(f"GFS {s['gfs']} · PRS {s['prs']} · FAE {s['fae']}", markup=False)
    for item in e["evidence"]:
        console.print(f"  because {item['text']}", markup=False)
    if e["controls"]:
        console.print(_controls_table(e["controls"]))
    for step in e.get("next_steps") or []:
        console.print(f"next: {step}", markup=False)
    if e["actions"]:
        t = Table(title="Actions (recent)", title_justify="left")
        for col in ("time", "action", "target", "by", "outcome", "detail"):
            t.add_column(col, overflow="fold")
        for a in e["actions"]:
            t.add_row(_when(a["ts"]), a["kind"], a["target"], a["actuator"], a["status"], a["detail"])
        console.print(t)


def _control(verb: str, url: str, token: str, ca: str, **body: Any) -> None:
    got = _call(
        "POST", url, token, f"/v1/ops/{verb}", ca, body={k: v for k, v in body.items() if v is not None}
    )
    console.print("[green]done:[/] " + escape(str(got["detail"])))
    for r in got.get("results") or []:
        console.print(
            f"  {r['kind']} {r['target']} via {r['actuator']}: {r['status']} ({r['detail']})", markup=False
        )


@ctl_app.command()
def pause(
    scope: Annotated[str, typer.Argument(help="fleet, or a domain such as rack/r03, cdu/c1, node/n0007")] = "fleet",
    duration: For = "1h", reason: Reason = "", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "",
) -> None:  # fmt: skip
    """Stop carrying actions out in SCOPE (decided and advised only) until resumed or expired."""
    _control("pause", url, token, ca, target=scope, reason=_reason(reason), for_s=parse_duration(duration))


@ctl_app.command()
def resume(scope: Annotated[str, typer.Argument()] = "fleet", reason: Reason = "", url: Url = DEFAULT_URL,
           token: Token = "", ca: CaFile = "") -> None:  # fmt: skip
    """End a pause: what is still unwell there is planned again at the next tick."""
    _control("resume", url, token, ca, target=scope, reason=_reason(reason))


@ctl_app.command()
def pin(
    entity: str, state: Annotated[str, typer.Option(help="healthy (left in service) or quarantined (held out)")],
    duration: For = "4h", reason: Reason = "", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "",
) -> None:  # fmt: skip
    """Hold ENTITY's state: healthy (seamguard leaves it in service) or quarantined (drained)."""
    _control(
        "pin",
        url,
        token,
        ca,
        target=entity,
        state=state,
        reason=_reason(reason),
        for_s=parse_duration(duration),
    )


@ctl_app.command()
def unpin(
    entity: str, reason: Reason = "", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = ""
) -> None:
    """End a pin: the entity is seamguard's to judge again."""
    _control("unpin", url, token, ca, target=entity, reason=_reason(reason))


@ctl_app.command()
def maintenance(
    scope: str, duration: For = "2h", reason: Reason = "", end: Annotated[bool, typer.Option("--end", help="end the window now")] = False,
    url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "",
) -> None:  # fmt: skip
    """A maintenance window on SCOPE: seamguard's hands off it until it ends (or --end it)."""
    if end:
        _control("end_maintenance", url, token, ca, target=scope, reason=_reason(reason))
    else:
        _control(
            "maintenance",
            url,
            token,
            ca,
            target=scope,
            reason=_reason(reason),
            for_s=parse_duration(duration),
        )


@ctl_app.command()
def repaired(
    node: Annotated[str, typer.Argument(help="node/NAME: the node, its GPUs and its uplink")],
    reason: Reason = "", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "",
) -> None:  # fmt: skip
    """Vouch NODE repaired: seamguard forgets its history, and releases it at once if held for its
    first quarantine in the repeat window (a week by default; a repeat offender still waits its
    recovery delay)."""
    _control("repaired", url, token, ca, target=node, reason=_reason(reason))


@ctl_app.command()
def approve(
    key: str, reason: Reason = "approved", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = ""
) -> None:
    """Carry out an action waiting for approval (``ctl status`` lists the keys)."""
    _control("approve", url, token, ca, target=key, reason=_reason(reason))


@ctl_app.command()
def reject(key: str, reason: Reason = "", url: Url = DEFAULT_URL, token: Token = "", ca: CaFile = "") -> None:
    """Drop an action waiting for approval; it leaves the safety layer's ledger."""
    _control("reject", url, token, ca, target=key, reason=_reason(reason))


def _reason(reason: str) -> str:
    if len(reason.strip()) < 3:
        raise typer.BadParameter(
            "say why (at least 3 characters): it is journaled with your name", param_hint="--reason"
        )
    return reason.strip()

"""The HAProxy actuator: server weights and states through the runtime API (the stats socket).

Hand-written client: the runtime API is one text command per connection over a unix or TCP
socket, and the Python clients for it on PyPI are unmaintained; a dozen lines of ``socket`` are
easier to trust. Every change is read back with ``show servers state`` so that a repeat is
``already``, and a write that did not take is ``failed``.

Mapping: ``servers`` maps an entity id (``node/n0123``, ``pool/decode-a``) to ``backend/server``;
a GPU's action applies to its node's server. ``drain_node`` sets the quarantine state (``drain``
by default, or ``maint``); ``resume_node``/``restore_admission`` set ``ready`` and the normal
weight; ``restrict_admission`` lowers the weight; ``set_weight`` takes ``weight`` from the params.
HAProxy has no place to mark who set a state, so seamguard only lifts the state it sets itself:
a server in another non-ready state (an operator's ``maint``) is refused, never made ready.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from seamguard.actuators.base import before_side_effect
from seamguard.model.actions import Action, ActionResult, ActionStatus
from seamguard.strict_model import StrictModel

# srv_admin_state bits (HAProxy src/server.h): forced/inherited/config/resolver/health maint, drains.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_DRAIN_BITS = 0x08 | 0x10
KINDS = frozenset({"drain_node", "resume_node", "restrict_admission", "restore_admission", "set_weight"})


class HaproxyConfig(StrictModel):
    socket: str = Field(description="unix socket path, or tcp://127.0.0.1:9999")
    servers: dict[str, str] = Field(description="entity id -> backend/server")
    weight: int = Field(default=100, ge=0, le=256, description="the normal weight")
    degraded_weight: int = Field(default=10, ge=0, le=256)
    quarantine_state: Literal["drain", "maint"] = "drain"
    timeout_s: float = Field(default=5.0, gt=0)


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    state: str  # ready | drain | maint
    weight: int  # srv_uweight, the user-set weight


def runtime_command(address: str, command: str, timeout_s: float = 5.0) -> str:
    """Send one command over the runtime API and return its whole answer."""
    if address.startswith("tcp://"):
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        sock.connect(address)
    with sock:
        sock.sendall(command.encode() + b"\n")
        chunks: list[bytes] = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def parse_servers_state(text: str) -> list[ServerState]:
    """``show servers state`` (format version 1): a version line, a ``#`` header naming the columns, rows."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = next((ln for ln in lines if ln.startswith("#")), None)
    if header is None:
        raise ValueError(f"no header in 'show servers state' answer: {text[:200]!r}")
    cols = header.lstrip("# ").split()
    at = {c: i for i, c in enumerate(cols)}
    out: list[ServerState] = []
    for ln in lines:
        if ln.startswith("#") or len(ln.split()) < len(cols):
            continue
        f = ln.split()
        admin = int(f[at["srv_admin_state"]])
        state = "maint" if admin & _MAINT_BITS else "drain" if admin & _DRAIN_BITS else "ready"
        out.append(ServerState(f[at["be_name"]], f[at["srv_name"]], state, int(f[at["srv_uweight"]])))
    return out


class HaproxyActuator:
    kinds = KINDS

    def __init__(self, config: HaproxyConfig, *, name: str = "haproxy") -> None:
        self.name = name
        self.config = config

    def _cmd(self, command: str) -> str:
        return runtime_command(self.config.socket, command, self.config.timeout_s)

    def server_state(self, backend: str, server: str) -> ServerState | None:
        for s in parse_servers_state(self._cmd(f"show servers state {backend}")):
            if s.server == server:
                return s
        return None

    def _server_of(self, target: str) -> str | None:
        if target in self.config.servers:
            return self.config.servers[target]
        if target.startswith("gpu/"):  # gpu/<node>/<i>: the node's server
            node = "node/" + target.split("/")[1]
            return self.config.servers.get(node)
        return None

    def _wanted(self, action: Action, now_state: ServerState) -> tuple[str | None, int | None, str]:
        """(state to set, weight to set, refusal) for the action given the server's state."""
        cfg = self.config
        kind = action.kind
        if kind == "drain_node":
            if now_state.state not in ("ready", cfg.quarantine_state):
                return None, None, ""  # already out of service by someone else: nothing to add
            return cfg.quarantine_state, None, ""
        if kind in ("resume_node", "restore_admission"):
            if now_state.state not in ("ready", cfg.quarantine_state):
                return None, None, f"in {now_state.state}, which seamguard did not set: left as is"
            return "ready", cfg.weight, ""
        if kind == "restrict_admission":
            return None, cfg.degraded_weight, ""
        if kind == "set_weight":
            raw = action.param("weight")
            if not raw.isdigit() or not 0 <= int(raw) <= 256:
                return None, None, f"set_weight needs a weight 0..256 in params, got {raw!r}"
            return None, int(raw), ""
        return None, None, f"kind {kind} is not an HAProxy action"

    def apply(self, action: Action, now: float) -> ActionResult:
        def result(status: ActionStatus, detail: str) -> ActionResult:
            return ActionResult(action, self.name, status, detail, now)

        where = self._server_of(action.target)
        if where is None or "/" not in where:
            return result(ActionStatus.SKIPPED, f"no HAProxy server mapped for {action.target}")
        backend, server = where.split("/", 1)
        try:
            before = self.server_state(backend, server)
            if before is None:
                return result(ActionStatus.REFUSED, f"{where} is not a server HAProxy knows")
            state, weight, refusal = self._wanted(action, before)
            if refusal:
                return result(ActionStatus.REFUSED, f"{where} {refusal}")
            done: list[str] = []
            if state is not None and state != before.state:
                before_side_effect()
                answer = self._cmd(f"set server {where} state {state}").strip()
                done.append(f"state {before.state}->{state}" + (f" ({answer})" if answer else ""))
            if weight is not None and weight != before.weight:
                before_side_effect()
                answer = self._cmd(f"set server {where} weight {weight}").strip()
                done.append(f"weight {before.weight}->{weight}" + (f" ({answer})" if answer else ""))
            if not done:
                return result(ActionStatus.ALREADY, f"{where} already {before.state}, weight {before.weight}")
            after = self.server_state(backend, server)
        except (OSError, ValueError) as exc:
            return result(ActionStatus.FAILED, f"runtime API {self.config.socket}: {exc!r}")
        if (
            after is None
            or (state is not None and after.state != state)
            or (weight is not None and after.weight != weight)
        ):
            return result(
                ActionStatus.FAILED, f"{where}: read back {after}, wanted state={state} weight={weight}"
            )
        return result(ActionStatus.DONE, f"{where}: " + ", ".join(done))

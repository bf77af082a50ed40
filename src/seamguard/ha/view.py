"""What a replica knows of the leadership, in a module of its own: the service reports it
without importing the etcd client."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeaderView:
    """What this replica knows of the leadership (``/v1/status``, ``/metrics``)."""

    me: str
    leading: bool
    epoch: int  # the leadership's epoch: this replica's when leading, else the leader's seen (0: none)
    leader: str  # the leader's name ('' when none is known)
    acting_left_s: float  # leading: how long this replica may still act without a renewal; else 0
    error: str = ""  # the last etcd error ('' when the last call went through)

    def to_json(self) -> dict[str, object]:
        return {"me": self.me, "leading": self.leading, "epoch": self.epoch, "leader": self.leader,
                "acting_left_s": round(self.acting_left_s, 3), "error": self.error}  # fmt: skip

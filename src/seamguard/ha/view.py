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
    # every live replica's last tick time, as each announced it (``Leadership.step``)
    replicas: tuple[tuple[str, float], ...] = ()

    def lag_s(self) -> dict[str, float]:
        """Each replica's engine behind the newest tick any replica announced (the leader's, unless
        the leader itself lags), in seconds."""
        newest = max((t for _, t in self.replicas), default=0.0)
        return {name: round(newest - t, 3) for name, t in self.replicas}

    def to_json(self) -> dict[str, object]:
        return {"me": self.me, "leading": self.leading, "epoch": self.epoch, "leader": self.leader,
                "acting_left_s": round(self.acting_left_s, 3), "error": self.error,
                "replica_lag_s": self.lag_s()}  # fmt: skip

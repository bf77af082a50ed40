"""What each storage path delivers to this job, measured from the saves it reports.

The engine's figure for a path is a fleet-wide reading from its last tick; the job's own last
save to it is closer to what its next save will see, so while that measurement is fresh it
prices the path. Reads are taken to slow with writes, as the engine takes them
(``control.checkpoint_loop.storage_paths``). A measurement covers the whole write as the loop
timed it, coordination included: slightly pessimistic, never optimistic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from seamguard.economics.checkpoint_modes import Mode, StoragePath


@dataclass(frozen=True)
class Measurement:
    write_gbps: float
    at_s: float  # the advisor's clock when the save was reported


def write_seconds(mode: Mode, blocking_s: float, durable_s: float) -> float:
    """How long a save spent writing to its path: all of a blocking save, the background part
    of a tiered one; an in-memory save writes to no path (0)."""
    if mode in (Mode.FULL, Mode.INCREMENTAL):
        return blocking_s
    if mode is Mode.TIERED:
        return durable_s - blocking_s
    return 0.0


def priced(
    paths: Iterable[StoragePath], measured: Mapping[str, Measurement], now_s: float, fresh_for_s: float
) -> list[StoragePath]:
    """The engine's paths, each freshly measured one at its measured throughput (state kept: a
    path the engine calls unsafe stays unsafe however fast it writes)."""
    out = []
    for path in paths:
        m = measured.get(path.name)
        if m is None or now_s - m.at_s > fresh_for_s:
            out.append(path)
            continue
        read = path.read_gbps * m.write_gbps / path.write_gbps if path.write_gbps > 0 else path.read_gbps
        out.append(replace(path, write_gbps=m.write_gbps, read_gbps=read))
    return out

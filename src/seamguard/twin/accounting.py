"""Where reserved GPU time goes: productive time and the lost-time buckets, which sum to it exactly.

Buckets (GPU-seconds; the semantics follow Google's ml-goodput-measurement: blocking work is
badput, background work is not):

* ``productive``: steps that survive (are never rolled back), at the pace the job would have
  had with no gray failure: this is the *useful* time, and ETTR = productive / reserved;
* ``slowdown``: the extra time those surviving steps took because of gray failures (a throttled
  GPU, a latency-toxic link); the same-SKU spread and the diurnal swing are part of the healthy
  pace, not of this bucket;
* ``checkpoint_save``: blocking checkpoint saves;
* ``restore``: loading a checkpoint after a restart;
* ``rollback``: time spent on steps later lost to a failure (progress since the last checkpoint);
* ``restart``: from a failure to a running job again: detection, waiting for the bad node to be
  found and drained, re-initialisation;
* ``quarantine_idle``: waiting for capacity that the policy itself holds in quarantine although
  nothing is wrong with it;
* ``placement_wait``: waiting for capacity for any other reason (failed nodes in repair).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt


class Bucket(IntEnum):
    PRODUCTIVE = 0
    SLOWDOWN = 1
    CHECKPOINT_SAVE = 2
    RESTORE = 3
    ROLLBACK = 4
    RESTART = 5
    QUARANTINE_IDLE = 6
    PLACEMENT_WAIT = 7

    @property
    def label(self) -> str:
        return self.name.lower()


BUCKETS: tuple[str, ...] = tuple(b.label for b in Bucket)
LOST_BUCKETS: tuple[str, ...] = BUCKETS[1:]


def new_buckets() -> npt.NDArray[np.float64]:
    return np.zeros(len(Bucket))

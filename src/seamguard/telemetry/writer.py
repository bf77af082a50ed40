"""Writing telemetry batches in the contract's long CSV, so any run can be replayed with ``score``.

Columns are built with Arrow ``take`` over the id and name tables and written by pyarrow's
CSV writer: no per-row Python, and floats are written in their shortest round-trip form, so
timestamps and values read back bit for bit. A NaN value (missing data) is written as an
empty field, which the replay reads back as NaN.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from seamguard.model.catalog import SignalCatalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay_files import CONTRACT_COLUMNS

_SCHEMA = pa.schema(
    [
        ("timestamp", pa.float64()),
        ("entity", pa.string()),
        ("signal", pa.string()),
        ("value", pa.float64()),
    ]
)


def _needs_quotes(names: list[str]) -> bool:
    return any(ch in name for name in names for ch in ',"\r\n')


class TelemetryCsvWriter:
    """Context manager writing the ``timestamp,entity,signal,value`` CSV (gzip if the path ends in .gz)."""

    def __init__(self, path: Path, topology: Topology, catalog: SignalCatalog) -> None:
        self.path = path
        names = [""] * len(catalog)
        for sig in catalog.signals:
            names[sig.index] = sig.name
        ids = list(topology.ids)
        self._ids = pa.array(ids, type=pa.string())
        self._names = pa.array(names, type=pa.string())
        # Ids never hold a comma or quote in practice; quoting only then keeps the file plain.
        quoting = "needed" if _needs_quotes(ids) or _needs_quotes(names) else "none"
        self._options = pcsv.WriteOptions(include_header=False, quoting_style=quoting, batch_size=1 << 16)
        self._fh: gzip.GzipFile | io.BufferedWriter | None = None
        self._writer: Any = None

    def __enter__(self) -> TelemetryCsvWriter:
        gz = self.path.name.lower().endswith(".gz")
        fh: gzip.GzipFile | io.BufferedWriter = (
            gzip.open(self.path, "wb", compresslevel=1) if gz else self.path.open("wb")
        )
        try:
            # The header is written by hand: pyarrow would quote the column names.
            fh.write((",".join(CONTRACT_COLUMNS) + "\n").encode())
            self._writer = pcsv.CSVWriter(fh, _SCHEMA, write_options=self._options)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, batch: TelemetryBatch) -> None:
        if self._writer is None:
            raise ValueError(f"{self.path}: writer is not open (use it as a context manager)")
        if len(batch) == 0:
            return
        table = pa.Table.from_arrays(
            [
                pa.array(batch.timestamp, type=pa.float64()),
                self._ids.take(pa.array(batch.entity, type=pa.int64())),
                self._names.take(pa.array(batch.signal, type=pa.int64())),
                pa.array(batch.value, type=pa.float64(), mask=np.isnan(batch.value)),
            ],
            schema=_SCHEMA,
        )
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

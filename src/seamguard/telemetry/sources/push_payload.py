"""A pushed payload read into columns: the three forms (JSON columns, JSON rows, NDJSON), strict
types, and every refusal as a ``PayloadError`` naming the row and field as the client sent it.

Parsing only: what the rows mean (names, the stamp window, limits, the queue) is ``push``'s.

Payloads (``Content-Type`` JSON or NDJSON, else 415; ``Content-Encoding: gzip`` accepted):

* JSON columns: ``{"entity": [...], "signal": [...], "timestamp": [...], "value": [...]}``;
  the efficient form (no object per row, values go straight to numpy);
* JSON rows: ``{"rows": [{"entity": ..., "signal": ..., "timestamp": ..., "value": ...}, ...]}``;
* NDJSON (``Content-Type: application/x-ndjson``): one row object per line.

A value is a JSON number or ``null`` (missing data, passed on as NaN): a string, a boolean or an
object refuses the batch with 422 naming the row and field. A timestamp is a finite JSON number
of unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError
from pydantic_core import from_json

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
MAX_ERRORS = 10  # validation errors listed in one 422
# pydantic lists every error of what it validates: 5 million "{}" rows were 20 million error
# objects (10 GB, 30 s). Rows are validated this many at a time, stopping at the first chunk with errors.
CHUNK_ROWS = 10_000

# Strict: a JSON number (an integer is a number) or null; "95", true and {} are refused.
Timestamp = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Value = Annotated[float, Field(strict=True)]


class PushColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: list[StrictStr]
    signal: list[StrictStr]
    timestamp: list[Timestamp]
    value: list[Value | None]


class PushRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: StrictStr
    signal: StrictStr
    timestamp: Timestamp
    value: Value | None


class PushRows(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[PushRow]


_NDJSON = TypeAdapter(list[PushRow])
Model = TypeVar("Model", PushColumns, PushRows)
_ROW = TypeAdapter(PushRow)


@dataclass(frozen=True)
class Parsed:
    entity: list[str]
    signal: list[str]
    timestamp: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    form: str  # "columns", "rows" or "ndjson": how a row is named in a 422
    lines: list[int] | None = None  # NDJSON: the line of each row


class PayloadError(Exception):
    """A refused payload: its HTTP status and what was wrong, for the client."""

    def __init__(
        self, status: int, detail: Any, retry_after_s: float | None = None, charged: bool = False
    ) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.charged = charged  # the principal's bucket was already billed for this batch


def _loc(loc: tuple[int | str, ...], line_base: list[int] | None = None) -> str:
    """``value[17]``, ``rows[3].timestamp``, ``line 8: value``."""
    parts = list(loc)
    if line_base is not None and parts and isinstance(parts[0], int):
        head = f"line {line_base[parts[0]]}"
        rest = ".".join(str(p) for p in parts[1:])
        return f"{head}: {rest}" if rest else head
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(body)"


def _msg(err: Any) -> str:
    """pydantic's message, with what was sent when a number was expected (a quoted "95", a true)."""
    if err["type"] in ("float_type", "float_parsing"):
        given = err.get("input")
        if isinstance(given, int) and not isinstance(given, bool):  # an integer no float holds
            return (
                f"an integer of {len(str(abs(given))):,} digits is past the float range (about 1.8e308): "
                "a JSON number written as a float (1e999) is counted as non-finite, an integer this long is refused"
            )
        sent = repr(given)
        sent = sent if len(sent) <= 40 else sent[:37] + "..."
        return f"{err['msg']}: a JSON number or null is required, got {sent}"
    return str(err["msg"])


def _shifted(exc: ValidationError, start: int) -> list[Any]:
    """``exc``'s errors with the row index (the first int in each loc) moved by ``start``."""
    out = []
    for e in exc.errors():
        loc = list(e["loc"])
        at = next((k for k, p in enumerate(loc) if isinstance(p, int)), None)
        if at is not None:
            loc[at] = int(loc[at]) + start
        out.append({**e, "loc": tuple(loc)})
    return out


def _invalid(
    errs: list[Any], line_base: list[int] | None = None, checked: tuple[int, int] | None = None
) -> PayloadError:
    """``checked``: the rows (from, to) whose errors ``errs`` are, when validation stopped there."""
    detail = [
        {"loc": list(e["loc"]), "field": _loc(tuple(e["loc"]), line_base), "msg": _msg(e)}
        for e in errs[:MAX_ERRORS]
    ]
    if len(errs) > MAX_ERRORS:
        more = f"... and {len(errs) - MAX_ERRORS} more errors"
        if checked is not None:
            more += f" in rows {checked[0]:,} to {checked[1]:,}; the rows after them were not checked"
        detail.append({"loc": [], "field": "(body)", "msg": more})
    return PayloadError(422, detail)


def _one(field_name: str, msg: str) -> PayloadError:
    return PayloadError(422, [{"loc": [field_name], "field": field_name, "msg": msg}])


def row_loc(parsed: Parsed, i: int, name: str) -> tuple[list[int | str], str]:
    """Where row ``i``'s field ``name`` is, in the form the client sent."""
    if parsed.form == "columns":
        return [name, i], f"{name}[{i}]"
    if parsed.form == "rows":
        return ["rows", i, name], f"rows[{i}].{name}"
    line = parsed.lines[i] if parsed.lines is not None else i + 1
    return [line - 1, name], f"line {line}: {name}"


def parse_payload(body: bytes, content_type: str, max_rows: int) -> Parsed:
    """One payload, already decompressed, read into columns; raises ``PayloadError`` (400, 413
    past ``max_rows`` rows, 422 naming the row and field)."""
    if content_type.split(";")[0].strip().lower() in NDJSON_TYPES:
        lines_sent = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        _check_lines(lines_sent, "lines (blank ones included)", max_rows)  # before splitting them
        lines = body.split(b"\n")
        numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
        # One validation of each chunk's lines joined as an array; a line holding anything but
        # one row ("{...}, {...}" joins into two) makes the counts differ, and then each line
        # of the chunk is checked on its own to name the first bad one.
        rows: list[PushRow] = []
        for start in range(0, len(numbered), CHUNK_ROWS):
            chunk = numbered[start : start + CHUNK_ROWS]
            try:
                got = _NDJSON.validate_json(b"[" + b",".join(ln for _, ln in chunk) + b"]")
            except ValidationError:
                raise _bad_ndjson_line(chunk) from None
            if len(got) != len(chunk):
                raise _bad_ndjson_line(chunk)
            rows += got
        return _from_rows(rows, "ndjson", [k for k, _ in numbered])
    try:
        data = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise PayloadError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError(
            422, "expected a JSON object: columns (entity, signal, timestamp, value) or {'rows': [...]}"
        )
    if "rows" in data:
        chunks = _chunked(PushRows, data, ("rows",), max_rows)
        return _from_rows([r for part in chunks for r in part.rows], "rows")
    parts = _chunked(PushColumns, data, ("entity", "signal", "timestamp", "value"), max_rows)
    joined: dict[str, Any] = {k: [x for p in parts for x in getattr(p, k)] for k in PushColumns.model_fields}
    cols = PushColumns.model_construct(None, **joined)  # each part validated: not again whole
    lengths = {k: len(getattr(cols, k)) for k in ("entity", "signal", "timestamp", "value")}
    if len(set(lengths.values())) > 1:
        n = lengths["entity"]
        worst = next(k for k, v in lengths.items() if v != n)
        shown = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise _one(worst, f"columns differ in length ({shown}): {worst} has {lengths[worst]}, entity has {n}")
    ts = np.asarray(cols.timestamp, dtype=np.float64)
    value = np.array(cols.value, dtype=np.float64)  # None (a missing value) becomes NaN
    return Parsed(cols.entity, cols.signal, ts, value, "columns")


def _chunked(model: type[Model], data: dict[str, Any], lists: tuple[str, ...], max_rows: int) -> list[Model]:
    """``data`` validated as ``model`` ``CHUNK_ROWS`` rows at a time (the lists named in
    ``lists`` sliced alike); a payload longer than a burst is refused before any of it is."""
    n = max((len(data[k]) for k in lists if isinstance(data.get(k), list)), default=0)
    _check_lines(n, "rows", max_rows)
    out: list[Model] = []
    for start in range(0, max(n, 1), CHUNK_ROWS):
        part = {
            k: v[start : start + CHUNK_ROWS] if k in lists and isinstance(v, list) else v
            for k, v in data.items()
        }
        try:
            out.append(model.model_validate(part))
        except ValidationError as exc:
            raise _invalid(_shifted(exc, start), checked=(start, min(n, start + CHUNK_ROWS) - 1)) from None
    return out


def _check_lines(n: int, what: str, max_rows: int) -> None:
    """More rows than a burst is refused before validation (a 413 after it, in ``_check_size``)."""
    if n > max_rows:
        raise PayloadError(
            413,
            f"a batch of {n:,} {what} exceeds the burst of {max_rows:,} rows one client may push at once; split it",
        )


def _from_rows(rows: list[PushRow], form: str, lines: list[int] | None = None) -> Parsed:
    return Parsed(
        [r.entity for r in rows],
        [r.signal for r in rows],
        np.array([r.timestamp for r in rows], dtype=np.float64),
        np.array([np.nan if r.value is None else r.value for r in rows], dtype=np.float64),
        form,
        lines,
    )


def _bad_ndjson_line(numbered: list[tuple[int, bytes]]) -> PayloadError:
    for line_no, line in numbered:
        try:
            _ROW.validate_json(line)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                return PayloadError(
                    400, f"line {line_no} is not valid JSON (one row per line): {exc.errors()[0]['msg']}"
                )
            return PayloadError(422, [
                {"loc": [line_no - 1, *e["loc"]], "field": f"line {line_no}: " + ".".join(str(x) for x in e["loc"]),
                 "msg": _msg(e)}
                for e in exc.errors()[:MAX_ERRORS]
            ])  # fmt: skip
    return PayloadError(400, "body is not valid NDJSON")


class PushResult(BaseModel):
    """The response to an accepted batch."""

    accepted: int  # rows queued for the engine
    rows: int  # rows in the payload
    missing_values: int  # accepted rows whose value was null
    non_finite: int  # accepted rows whose value was past the float range (1e999): read as missing
    implausible: int  # accepted rows whose value is a DCGM sentinel or outside the signal's range
    unknown_entities: dict[str, int]  # name -> rows dropped; at most ``push.MAX_LISTED_UNKNOWN`` names
    unknown_signals: dict[str, int]
    unknown_rows: int  # rows dropped for an unknown entity or signal, listed or not
    unknown_names_not_listed: int  # distinct unknown names beyond those listed

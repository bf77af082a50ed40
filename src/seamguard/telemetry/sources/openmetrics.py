"""Prometheus text (0.0.4) and OpenMetrics exposition parsed into numpy columns, fast.

Hand-written rather than ``prometheus_client.parser``: that parser builds a Python object
per sample and re-parses every label set every scrape; ``bench/ingest.py`` measures it at
well under 100,000 samples/s, while a 131,072-GPU fleet at a 10 s cadence needs ~400,000/s.
The trick: a series key (``NAME{labels}``, the text before the value) repeats scrape after
scrape, so a per-endpoint ``SeriesCache`` maps the raw key text to a caller-defined slot
(entity index, signal index...) and labels are parsed only for keys never seen. The hot loop
is one ``rpartition`` and one dict lookup per line; values are converted in bulk by numpy.

Bad lines never sink a scrape: each malformed line is skipped and counted (the first few
are named with their line number), and the scrape fails only when the malformed share of
the sample lines passes ``max_malformed_fraction``.

What is read (tested against the OpenMetrics project's parser suite and Prometheus's own
text-format cases, ``tests/test_openmetrics_conformance.py``):

* numbers follow the grammar both formats share (OpenMetrics ABNF ``number``; Prometheus
  text is Go's ``ParseFloat`` minus hex floats and ``_``, as expfmt and promparse enforce):
  decimal with optional sign, fraction and exponent, ``Inf``/``Infinity`` with optional
  sign and ``NaN``, case-insensitive. Python's ``float()`` reads more, and some of it
  changes a value: ``1_2`` is 12, ``1e5_0`` is 1e50, full-width or Arabic-Indic digits are
  digits, a no-break space is stripped. Those lines are malformed here.
* timestamps: Prometheus text has integer milliseconds; OpenMetrics, decimal seconds. One
  past ``MAX_TIMESTAMP_S`` (year 5138) makes its line malformed: the grammar allows 1e300, but
  no exporter means it as a date (the OpenMetrics suite's 1.2e19 s is the one good case flagged).
* blanks (spaces, tabs) wherever Prometheus text allows them: before the name, between the
  name and ``{``, around label names, ``=``, values and commas, a trailing comma, none
  needed after ``}``, several between tokens, trailing ones. OpenMetrics allows only single
  spaces, but reading more blanks never changes a value, so both formats get the 0.0.4 rule.
* a cut-off body: Prometheus text must end with a newline and OpenMetrics with ``# EOF``. A
  body that does not has lost its tail, and its last line may be a value cut short (``45``
  arriving as ``4``): that line is dropped and counted as malformed, so no cut value ever
  reaches the engine, while the complete lines before it are kept (their series would
  otherwise go stale for one truncated transfer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress

import numpy as np
import numpy.typing as npt

from seamguard.errors import InputError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

IGNORE = -1  # a comment or a blank line
_MISS = -2  # never seen: parse it
UNWANTED = -3  # a series the caller does not read: a sample line all the same, never delivered
MAX_ISSUES = 5  # malformed lines named per scrape; the rest are only counted
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}  # any other escaped character stays as written
_PAIR = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|\})')
_CLOSE = re.compile(r"[ \t]*\}")
_VALUE = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_UNESCAPE = re.compile(r"\\(.)")
_BLANKS = re.compile(r"[ \t]+")
# The number grammar of OpenMetrics (ABNF ``number``) and of Prometheus text (what expfmt and
# promparse accept); see the module docstring for why Python's float() is not enough.
_REAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(rf"{_REAL}|[+-]?(?i:inf|infinity)|(?i:nan)")
_SECONDS = re.compile(_REAL)  # OpenMetrics timestamp: realnumber
_MILLIS = re.compile(r"[+-]?[0-9]+")  # Prometheus text timestamp: Go's ParseInt, base 10
# Characters of a plain decimal, and the extra letters of inf, infinity and nan. Of the strings
# float() reads that are made of these only, just a signed NaN ("-nan") is outside the grammar.
_PLAIN = b"0123456789.+-eE"
_WORD_LETTERS = b"infatyINFATY"
_NO_INDEX = np.zeros(0, np.int64)
# A timestamp past this many seconds from 1970 (year 5138, either way) is no date an exporter can
# mean: the grammar and float() accept 1e300, which then overflows everything that turns seconds
# into integers (nanoseconds, datetimes), so such a line is malformed.
MAX_TIMESTAMP_S = 1e11

Resolver = Callable[[str, dict[str, str]], int]  # (metric name, labels) -> slot >= 0, or UNWANTED


class ExpositionError(InputError):
    """A scrape too broken to use: names the endpoint and the first bad line."""


@dataclass(frozen=True)
class ParseIssue:
    line: int  # 1-based line number in the payload
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True)
class Parsed:
    slot: IntArray  # per sample: the caller's slot for its series
    value: FloatArray
    timestamp: FloatArray  # unix seconds; NaN where the line carried none
    lines: int  # sample lines seen, malformed ones included
    malformed: int
    issues: tuple[ParseIssue, ...] = ()

    def __len__(self) -> int:
        return int(self.slot.size)


@dataclass
class SeriesCache:
    """Raw series key text -> slot, for one endpoint (keys differ per endpoint when a label
    such as Hostname is missing). Bounded: past ``max_keys`` new keys are parsed, not kept; and its
    owner may empty it (the DCGM slot table does when churned keys pile up)."""

    resolve: Resolver
    max_keys: int = 1_000_000
    # Keyed by the key text's hash, not the text: at fleet scale the cached keys (~200 bytes each,
    # 1.6 M of them for 131,072 GPUs) do not fit in the CPU caches, and comparing a hit's stored
    # text costs a memory miss per line. A 64-bit hash collision inside one endpoint's ~100 keys
    # has a probability near 1e-16 per endpoint.
    keys: dict[int, int] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)  # metric family -> TYPE line's type
    # label-set text -> labels: one GPU's ~12 fields share a label set, so it is parsed once
    labelsets: dict[str, dict[str, str]] = field(default_factory=dict)

    def lookup(self, key: str) -> int | None:
        return self.keys.get(hash(key))

    def remember(self, key: str, slot: int) -> None:
        if len(self.keys) < self.max_keys:
            self.keys[hash(key)] = slot


class _LineError(Exception):
    pass


def parse(
    text: str,
    cache: SeriesCache,
    *,
    where: str,
    openmetrics: bool | None = None,
    max_malformed_fraction: float = 0.5,
) -> Parsed:
    """Parse one exposition payload. ``openmetrics`` chooses the timestamp unit (seconds for
    OpenMetrics, milliseconds for Prometheus text) and whether ``# EOF`` is required; None
    decides from a ``# EOF`` line. Only OpenMetrics ends at ``# EOF``: Prometheus text (False)
    is not searched for one, a scan of the whole payload that costs ~6 % of a warm parse."""
    eof = -1 if openmetrics is False else _eof_at(text)
    if openmetrics is None:
        openmetrics = eof >= 0
    if eof >= 0:
        text = text[:eof]  # ends with a newline, or is empty: nothing was cut before # EOF
    lines = text.split("\n")
    tail = lines.pop()  # after the last newline: empty unless the body was cut off
    issues: list[ParseIssue] = []
    malformed = 0
    cut = _cut_off(tail, openmetrics and eof < 0)
    if cut:
        malformed += 1
        issues.append(ParseIssue(len(lines) + 1, cut))
    get = cache.keys.get
    parts = [ln.rpartition(" ") for ln in lines]
    slots = np.fromiter([get(hash(p[0]), _MISS) for p in parts], dtype=np.int64, count=len(parts))
    hit = slots >= 0
    values = [p[2] for p in compress(parts, hit)]
    value_arr, bad = _to_float(values)
    if bad.size:  # parse those lines in full: a real error, or a form the hot path cannot read
        slots[np.flatnonzero(hit)[bad]] = _MISS
        keep = np.ones(value_arr.size, dtype=bool)
        keep[bad] = False
        value_arr = value_arr[keep]
        hit = slots >= 0
    slot_arr = slots[hit]
    ts_arr = np.full(slot_arr.size, np.nan)
    unwanted = int(np.count_nonzero(slots == UNWANTED))
    miss = np.flatnonzero(slots == _MISS)
    if miss.size:
        extra_slot: list[int] = []
        extra_val: list[str] = []
        extra_ts: list[float] = []
        extra_line: list[int] = []
        for i in miss.tolist():
            try:
                got = _slow_line(lines[i], parts[i], cache, openmetrics)
            except _LineError as err:
                malformed += 1
                if len(issues) < MAX_ISSUES:
                    issues.append(ParseIssue(i + 1, str(err)))
                continue
            if got is None or got[0] < 0:  # a series the caller ignores: its value is not looked at
                unwanted += got is not None and got[0] == UNWANTED
                continue
            extra_slot.append(got[0])
            extra_val.append(got[1])
            extra_ts.append(got[2])
            extra_line.append(i)
        if extra_slot:  # appended after the cached ones: the store's latest-wins reads timestamps
            ext_val, bad = _to_float(extra_val)  # values checked in bulk, as on the hot path
            keep = np.ones(ext_val.size, dtype=bool)
            keep[bad] = False
            for j in bad.tolist():
                malformed += 1
                if len(issues) < MAX_ISSUES:
                    issues.append(ParseIssue(extra_line[j] + 1, _not_a_number(extra_val[j])))
            ext_slot, ext_ts = np.asarray(extra_slot, dtype=np.int64), np.asarray(extra_ts)
            stamped = keep & ~np.isnan(ext_ts)
            if stamped.any():
                keep[_repeats(ext_slot, ext_ts, stamped)] = False
            slot_arr = np.concatenate([slot_arr, ext_slot[keep]])
            value_arr = np.concatenate([value_arr, ext_val[keep]])
            ts_arr = np.concatenate([ts_arr, ext_ts[keep]])
    n_lines = int(slot_arr.size) + malformed + unwanted  # unread series are sample lines too
    issues.sort(key=lambda x: x.line)
    if malformed and malformed > max_malformed_fraction * max(n_lines, 1):
        first = issues[0] if issues else ParseIssue(0, "malformed")
        raise ExpositionError(
            f"{where}:{first.line}",
            f"{malformed} of {n_lines} sample lines malformed, scrape refused; first: {first.problem}",
        )
    return Parsed(slot_arr, value_arr, ts_arr, n_lines, malformed, tuple(issues[:MAX_ISSUES]))


def _eof_at(text: str) -> int:
    """Start of the ``# EOF`` line, or -1. Searched from the end, where OpenMetrics puts it; a
    line that only starts with ``# EOF`` (``# EOFx``) is a comment, not the end."""
    end = len(text)
    while (at := text.rfind("# EOF", 0, end)) >= 0:
        if (at == 0 or text[at - 1] == "\n") and text[at + 5 : at + 6] in ("", "\n"):
            return at
        end = at
    return -1


def _cut_off(tail: str, no_eof: bool) -> str:
    """Why the body looks truncated (empty when it does not): Prometheus text must end with a
    newline, OpenMetrics with ``# EOF``. ``tail`` is the text after the last newline."""
    if no_eof:
        return "no '# EOF' line: the OpenMetrics body was cut off" + (
            f", its unterminated last line (...{tail[-30:]!r}) dropped" if tail else ""
        )
    if tail:
        return f"body ends without a newline: the scrape was cut off, last line (...{tail[-30:]!r}) dropped"
    return ""


def _to_float(values: list[str]) -> tuple[FloatArray, IntArray]:
    """Bulk conversion of the hot path's values; returns the indices of those that are not numbers
    by the grammar (their lines get a full parse). The grammar check is a few C-speed scans of
    the joined text; a value at a time only when something unusual is in it (rare)."""
    if not _suspect(values):
        try:
            return np.asarray(values, dtype=np.float64), _NO_INDEX
        except ValueError:
            pass  # e.g. "1e" or "": only the check below says which
    ok = [_NUMBER.fullmatch(v) is not None for v in values]
    out = np.asarray([v if good else "nan" for v, good in zip(values, ok, strict=True)], dtype=np.float64)
    return out, np.flatnonzero(~np.asarray(ok, dtype=bool))


def _suspect(values: list[str]) -> bool:
    """True when some value may be one ``float()`` reads but the grammar does not (``1_2``,
    full-width digits, blanks, ``-nan``). False means float() reads exactly the grammar."""
    joined = "".join(values)
    if not joined.isascii():
        return True
    odd = joined.encode("ascii").translate(None, _PLAIN)
    if not odd:
        return False
    if odd.translate(None, _WORD_LETTERS):
        return True  # '_', a tab, 'x', ...
    return "-n" in joined or "+n" in joined or "-N" in joined or "+N" in joined


def _slow_line(
    line: str, part: tuple[str, str, str], cache: SeriesCache, openmetrics: bool
) -> tuple[int, str, float] | None:
    """A line whose key is not cached: a comment, a timestamped sample, a new series, or a
    cached series whose value the hot path could not read."""
    first = line[:1]
    if first in (" ", "\t", ""):  # blank or indented: rare, so only then a stripped copy
        first = line.lstrip(" \t")[:1]
        if not first:
            return None
    if first == "#":
        _comment(line.strip(" \t"), cache)
        if part[1]:  # never the empty key: every line without a space would become a comment
            cache.remember(part[0], IGNORE)
        return None
    head, sp, last = part
    key2, sp2, mid = head.rpartition(" ")
    if sp and sp2 and (slot := cache.lookup(key2)) is not None and _NUMBER.fullmatch(mid):
        try:  # a known series with a timestamp
            return slot, mid, _timestamp(last, openmetrics)
        except _LineError:
            pass  # the full parse below reads any other form, or says what is wrong
    name, labels, value, ts, at = _sample(line, cache)
    when = _timestamp(ts, openmetrics) if ts else math.nan  # checked before a garbage key is resolved
    # The text before the value, without the one space the hot path splits on: any line that is
    # this text, a space and a number is this series and that number.
    key = line[: at - 1] if line[at - 1] == " " else line[:at]
    slot = cache.lookup(key)
    if slot is None:
        slot = cache.resolve(name, labels)
        cache.remember(key, slot)
    return slot, value, when


def _not_a_number(raw: str) -> str:
    hint = ""
    if "_" in raw:
        hint = " (no '_' digit separators in this format)"
    elif "\r" in raw:
        hint = " (a carriage return: lines must end with a bare newline)"
    return f"value {raw!r} is not a number{hint}"


def _repeats(slot: IntArray, ts: FloatArray, stamped: npt.NDArray[np.bool_]) -> list[int]:
    """Samples (of those ``stamped``) that repeat their series' previous timestamp, to the
    nanosecond: OpenMetrics says an ingestor uses the first. Timestamped lines are rare."""
    last: dict[int, float] = {}
    out: list[int] = []
    for j in np.flatnonzero(stamped).tolist():
        # _timestamp bounds what reaches here; even so, round() raises on an infinite product
        s, product = int(slot[j]), float(ts[j]) * 1e9
        ns = round(product) if math.isfinite(product) else product
        if last.get(s) == ns:
            out.append(j)
        last[s] = ns
    return out


def _timestamp(raw: str, openmetrics: bool) -> float:
    """Unix seconds of a timestamp token, or a _LineError: off the grammar, or beyond
    ``MAX_TIMESTAMP_S`` (which also rules out an infinite one)."""
    shown = repr(raw) if len(raw) <= 40 else f"{raw[:30]!r}... ({len(raw)} characters)"
    if openmetrics:
        if _SECONDS.fullmatch(raw) is None:
            raise _LineError(f"timestamp {shown} is not a number of seconds")
        t = float(raw)
    else:
        if _MILLIS.fullmatch(raw) is None:
            raise _LineError(f"timestamp {shown} is not an integer count of milliseconds")
        t = float(raw) / 1000.0  # not * 1e-3: 1234567890 ms must read as 1234567.89 s, not ...0001
    if not math.isfinite(t):
        raise _LineError(f"timestamp {shown} is not finite")
    if abs(t) > MAX_TIMESTAMP_S:
        raise _LineError(f"timestamp {shown} is {t:.3g} s from 1970, past year 5138: not a date")
    return t


def _comment(line: str, cache: SeriesCache) -> None:
    words = line[1:].split(None, 3)
    if len(words) >= 3 and words[0] == "TYPE":
        cache.types[words[1]] = words[2]


def _sample(line: str, cache: SeriesCache) -> tuple[str, dict[str, str], str, str, int]:
    """Full parse of one sample line: (name, labels, value text, timestamp text or "", where the
    value starts). Blanks are read as Prometheus text allows them (see the module docstring)."""
    m = _NAME.match(line, _skip_blanks(line, 0) if line[0] in " \t" else 0)
    if m is None:
        raise _LineError(f"expected a metric name, got {line[:40]!r}")
    name = m.group()
    pos = m.end()
    if line[pos : pos + 1] in (" ", "\t"):
        pos = _skip_blanks(line, pos)
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        guess = line[pos : line.rfind("}") + 1]  # the label set, unless a value holds a '}' after it
        known = cache.labelsets.get(guess)
        if known is not None:
            labels, pos = known, pos + len(guess)
        else:
            begin = pos
            pos = _labels(line, pos + 1, labels)
            if line[begin:pos] == guess and len(cache.labelsets) < cache.max_keys:
                cache.labelsets[guess] = labels
    elif pos == m.end() and pos < len(line):  # "a-1" is no name "a" and value -1
        raise _LineError(f"expected a blank after metric name {name!r}, got {line[pos : pos + 20]!r}")
    rest = line[pos:]
    if " # " in rest:  # OpenMetrics exemplar: ignored
        rest = rest.split(" # ", 1)[0]
    at = _skip_blanks(line, pos)
    # split() splits on any whitespace (a CR, a no-break space...); only blanks separate tokens,
    # and a printable text has no whitespace but the space
    tokens = rest.split() if rest.isprintable() else _BLANKS.split(rest.strip(" \t"))
    if not tokens:
        tokens = [""]
    if not tokens[0]:
        raise _LineError(f"expected a value after {line[:pos][-40:]!r}")
    if len(tokens) > 2:
        raise _LineError(f"expected a value and an optional timestamp, got {rest.strip()[:40]!r}")
    return name, labels, tokens[0], tokens[1] if len(tokens) == 2 else "", at


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _labels(line: str, pos: int, out: dict[str, str]) -> int:
    """Parse ``name="value",...}`` from ``pos``; returns the position after ``}``."""
    while True:
        m = _PAIR.match(line, pos)
        if m is None:
            close = _CLOSE.match(line, pos)
            if close is not None:  # no labels, or a trailing comma
                return close.end()
            raise _LineError(_label_problem(line, pos))
        label, value = m.group(1), m.group(2)
        if "\\" in value:
            value = _UNESCAPE.sub(_unescape_one, value)
        if label in out:
            raise _LineError(f"label {label!r} repeated")
        out[label] = value
        pos = m.end()
        if m.group(3) == "}":
            return pos


def _label_problem(line: str, pos: int) -> str:
    """Why the label set at ``pos`` does not parse, for the notice."""
    m = _LABEL_NAME.match(line, _skip_blanks(line, pos))
    if m is None:
        return f"bad label name at column {pos + 1}"
    label, at = m.group(), _skip_blanks(line, m.end())
    quote = _skip_blanks(line, at + 1)
    if line[at : at + 1] != "=" or line[quote : quote + 1] != '"':
        return f'label {label!r}: expected ="value" at column {at + 1}'
    end = _VALUE.match(line, quote)
    if end is None:
        return f"label {label!r}: unterminated value"
    return f"expected ',' or '}}' after label {label!r} at column {end.end() + 1}"


def _unescape_one(m: re.Match[str]) -> str:
    """``\\\\``, ``\\"`` and ``\\n`` are escapes; a backslash before anything else is kept as
    written, as OpenMetrics (``BS normal-char``), Prometheus's promparse and prometheus_client
    read it (expfmt refuses the line instead; neither changes a value)."""
    ch = m.group(1)
    return _ESCAPES.get(ch, m.group())

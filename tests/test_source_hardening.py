"""A source never raises out of ``collect`` for bad input from the system it reads (base.py).

First the inputs a review found raising (absurd timestamps, integers past a float, JSON nested
thousands deep, an infinite Slurm number) and the last line of defence per Prometheus query and
per Slurm form; then the real fixtures, mutated a few hundred ways with a fixed seed, through each
source's parsers: nothing raises but the documented refusal of the whole document.
(The scrape source's own cases, which need exporters to scrape, are in test_source_scrape.py.)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from seamguard.telemetry.sources.openmetrics import (
    MAX_TIMESTAMP_S,
    UNWANTED,
    ExpositionError,
    SeriesCache,
    _repeats,
    parse,
)

FIXTURES = Path(__file__).parent / "fixtures"
DEEP = "[" * 100_000 + "]" * 100_000  # past the json module's recursion limit
MUTATIONS = 40  # per fixture file: a few hundred per source, a few seconds in all


# ---------------------------------------------------------------- exposition text (scrape source)


def om_cache() -> SeriesCache:
    return SeriesCache(lambda name, labels: 0 if name.startswith("DCGM") or name == "m" else UNWANTED)


def test_a_timestamp_past_year_5138_is_a_malformed_line_not_an_overflow() -> None:
    """1e300 passes the grammar and is finite; it raised OverflowError out of parse()."""
    body = 'm{a="1"} 1 1e300\nm{a="2"} 2 1700000000.5\nm{a="3"} 3 -2e11\nm{a="4"} 4 1e11\n# EOF\n'
    got = parse(body, om_cache(), where="x", max_malformed_fraction=1.0)
    assert got.value.tolist() == [2.0, 4.0] and got.timestamp.tolist() == [1700000000.5, MAX_TIMESTAMP_S]
    assert [i.line for i in got.issues] == [1, 3]
    assert got.issues[0].problem == "timestamp '1e300' is 1e+300 s from 1970, past year 5138: not a date"
    # Prometheus text: integer milliseconds. 303 digits is 1e300 s, finite until it meets 1e9.
    body = "m 1 " + "9" * 303 + "\nm 2 99999999999999999\nm 3 1700000000000\n"
    got = parse(body, om_cache(), where="x", openmetrics=False, max_malformed_fraction=1.0)
    assert got.value.tolist() == [3.0] and got.timestamp.tolist() == [1.7e9]
    assert "'999999999999999999999999999999'... (303 characters) is 1e+300 s" in got.issues[0].problem
    assert "past year 5138" in got.issues[1].problem


def test_repeated_timestamps_are_found_without_rounding_an_infinite_product() -> None:
    ts = np.array([1e300, 1e300, 5.0, 5.0])
    assert _repeats(np.zeros(4, np.int64), ts, np.ones(4, dtype=bool)) == [1, 3]


ODD_TEXT = [" ", "\t", "{", "}", '"', "\\", "=", ",", "#", "\n", "\r", "e", "-", ".", "_", "\x00", "é", "٣", "１",
            "\u00a0", "Inf", "NaN", "# EOF\n"]  # fmt: skip
HUGE_TEXT = [
    "9" * 20,
    "9" * 303,
    "9" * 400,
    "9" * 5000,
    "1e300",
    "-1e308",
    "1e999",
    "Infinity",
    "1_0",
    "1e11",
]


def mutate_exposition(rng: random.Random, text: str) -> str:
    """Byte flips, a digit run, a truncation, a huge value or timestamp, nesting, a repeated line."""
    lines = text.split("\n")
    samples = [i for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    at = rng.randrange(len(text) + 1)
    how = rng.randrange(6)
    if how == 0:
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice(ODD_TEXT) + text[at + 1 :]
        return text
    if how == 1:
        return text[:at] + "9" * rng.choice([20, 303, 5000]) + text[at:]
    if how == 2:
        return text[:at]
    if how == 3:  # a huge number as a value or as a timestamp of some sample lines
        for i in rng.sample(samples, min(3, len(samples))):
            key = lines[i].rpartition(" ")[0]
            lines[i] = (
                f"{lines[i]} {rng.choice(HUGE_TEXT)}"
                if rng.random() < 0.7
                else f"{key} {rng.choice(HUGE_TEXT)}"
            )
        return "\n".join(lines)
    if how == 4:
        return (
            text[:at]
            + rng.choice(["{", '{a="', "[", "\\", ","]) * rng.choice([10, 1000, 100_000])
            + text[at:]
        )
    i = rng.choice(samples)  # one series twice with timestamps: the repeated-timestamp check
    stamp = rng.choice(["1700000000", "1e300", "9" * 303, "-5"])
    lines[i : i + 1] = [f"{lines[i]} {stamp}", f"{lines[i]} {stamp}"]
    return "\n".join(lines)


@pytest.mark.parametrize("path", sorted((FIXTURES / "dcgm").glob("*.prom")), ids=lambda p: p.name)
def test_mutated_exporter_text_raises_nothing_but_exposition_error(path: Path) -> None:
    rng = random.Random(0)
    text = path.read_text(encoding="utf-8")
    cache = om_cache()
    parse(text, cache, where=path.name)  # warm: mutated lines also take the hot path of cached keys
    for _ in range(MUTATIONS):
        body = mutate_exposition(rng, text)
        try:
            got = parse(
                body, cache, where=path.name, openmetrics=rng.choice([None, True, False]),
                max_malformed_fraction=rng.choice([0.0, 0.5, 1.0]),
            )  # fmt: skip
        except ExpositionError:
            continue
        assert got.slot.size == got.value.size == got.timestamp.size <= got.lines
        stamped = got.timestamp[~np.isnan(got.timestamp)]
        assert np.all(np.abs(stamped) <= MAX_TIMESTAMP_S)

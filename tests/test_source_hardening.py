"""A source never raises out of ``collect`` for bad input from the system it reads (base.py).

First the inputs a review found raising (absurd timestamps, integers past a float, JSON nested
thousands deep, an infinite Slurm number) and the last line of defence per Prometheus query and
per Slurm form; then the real fixtures, mutated a few hundred ways with a fixed seed, through each
source's parsers: nothing raises but the documented refusal of the whole document.
(The scrape source's own cases, which need exporters to scrape, are in test_source_scrape.py.)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from seamguard.model.topology import Topology
from seamguard.telemetry.sources import prometheus_api
from seamguard.telemetry.sources.openmetrics import (
    MAX_TIMESTAMP_S,
    UNWANTED,
    ExpositionError,
    SeriesCache,
    _repeats,
    parse,
)
from seamguard.telemetry.sources.prometheus_api import PrometheusApiSource, _columns, _vector
from seamguard.telemetry.sources.prometheus_config import PrometheusApiConfig, PromQuery
from seamguard.telemetry.sources.scrape import Fetched
from seamguard.telemetry.sources.slurm import SlurmReader, _Form
from seamguard.telemetry.sources.slurm_commands import SlurmConfig
from seamguard.telemetry.sources.slurm_json import (
    JsonFormError,
    load_document,
    parse_jobs_json,
    parse_nodes_json,
    parse_reservations_json,
)
from seamguard.telemetry.sources.slurm_records import SlurmJob
from seamguard.telemetry.sources.slurm_text import parse_jobs, parse_nodes, parse_reservations

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


# ---------------------------------------------------------------- the Prometheus API


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Query text -> the answer body the fake server gives (no HTTP)."""
    bodies: dict[str, str] = {}

    def fake_fetch_all(urls: list[str], *, on_result: Callable[[Fetched], None], **_: Any) -> None:
        for url in urls:
            on_result(Fetched(url, bodies[parse_qs(urlsplit(url).query)["query"][0]]))

    monkeypatch.setattr(prometheus_api, "fetch_all", fake_fetch_all)
    return bodies


def vector(*entries: tuple[dict[str, str], list[Any]]) -> str:
    result = [{"metric": m, "value": v} for m, v in entries]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def rack_source(topology: Topology) -> PrometheusApiSource:
    """Two queries, ``good`` then ``bad``, each feeding rack power from a ``rack`` label."""
    queries = [PromQuery(query=q, signal="rack.power_kw", entity="rack/{rack}") for q in ("good", "bad")]
    return PrometheusApiSource(
        PrometheusApiConfig(url="http://p:9090", dcgm=False, queries=queries), topology
    )


BIG = "9" * 400  # a JSON integer float() cannot hold: OverflowError


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ('{"status":"success","data":{"resultType":"vector","result":[{"metric":{"rack":"r1"},"value":[' + BIG
         + ',"5"]}]}}', "timestamp 999999999999999999999999999999... (400 characters) of a result entry"),
        (vector(({"rack": "r1"}, [100, "__BIG__"])).replace('"__BIG__"', BIG), "1 NaN, Inf or blank-sentinel"),
        (vector(({"rack": "r1"}, [100, [1, 2]]), ({"rack": "r2"}, [100, [3, 4]])), "2 NaN, Inf or blank"),
        (vector(({"rack": "r1"}, [1e308, "5"])), "timestamp 1e+308 of a result entry is not a time"),
        (vector(({"rack": "r1"}, [None, "5"])), "timestamp None of a result entry is not a time"),
        ('{"status":"success","data":' + DEEP + "}", "answer is not JSON we can read (nested too deeply)"),
        ('{"status":"success","data":[' + "1" * 5000 + "]}", "answer is not JSON we can read (Exceeds the limit"),
        ('{"status":"success","data":[1]}', "expected an instant vector, got data [1]"),
    ],
)  # fmt: skip
def test_absurd_numbers_and_nesting_cost_only_their_query(
    topology: Topology, answers: dict[str, str], bad: str, said: str
) -> None:
    answers["good"] = vector(({"rack": "r0"}, [100.0, "5"]))
    answers["bad"] = bad
    got = rack_source(topology).collect(100.0)
    assert [topology.ids[e] for e in got.batch.entity.tolist()] == ["rack/r0"]
    [notice] = got.notices
    assert notice.where == "query 'bad'" and said in notice.message, notice.message


def test_an_unforeseen_exception_reading_one_answer_is_that_querys_notice(
    topology: Topology, answers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers["good"] = vector(({"rack": "r0"}, [100.0, "5"]))
    answers["bad"] = vector(({"rack": "r1"}, [100.0, "6"]))
    real = PrometheusApiSource._query

    def buggy(self: PrometheusApiSource, q: PromQuery, *args: Any) -> Any:
        if q.query == "bad":
            raise ZeroDivisionError("a bug")
        return real(self, q, *args)

    monkeypatch.setattr(PrometheusApiSource, "_query", buggy)
    got = rack_source(topology).collect(100.0)
    assert [topology.ids[e] for e in got.batch.entity.tolist()] == ["rack/r0"]
    [notice] = got.notices
    assert notice.where == "query 'bad'"
    assert (
        notice.message.startswith("ZeroDivisionError: a bug while reading the answer")
        and "report" in notice.message
    )


ODD_JSON: list[Any] = [None, True, False, 0, -1, 1.5, 1e308, math.inf, -math.inf, math.nan, "", "x", "NaN", "+Inf",
                       [], [None], [1, 2, 3], {}, {"a": 1}, 10**30, 10**400, -(10**400)]  # fmt: skip


def mutate_value(rng: random.Random, value: Any, p: float) -> Any:
    """Each part of a JSON document replaced by an odd value with probability ``p``."""
    if isinstance(value, dict):
        return {
            k: rng.choice(ODD_JSON) if rng.random() < p else mutate_value(rng, v, p) for k, v in value.items()
        }
    if isinstance(value, list):
        return [rng.choice(ODD_JSON) if rng.random() < p else mutate_value(rng, v, p) for v in value]
    return value


def mutate_json(rng: random.Random, text: str) -> str:
    """Odd values in the structure, or the text mangled: a byte flip, a digit run (5,000 digits
    pass the 4,300-digit integer limit), a truncation, deep nesting."""
    how = rng.randrange(5)
    if how < 2:
        return json.dumps(mutate_value(rng, json.loads(text), rng.choice([0.02, 0.1])))
    at = rng.randrange(len(text) + 1)
    if how == 2:
        return text[:at] + rng.choice(["9" * 400, "9" * 5000, "1e999", "-", '"', "{", "]"]) + text[at + 1 :]
    if how == 3:
        return text[:at]
    return text[:at] + rng.choice(["[", '{"a":']) * rng.choice([100, 100_000]) + text[at:]


def test_mutated_prometheus_answers_raise_nothing_but_value_error(
    topology: Topology, answers: dict[str, str]
) -> None:
    rng = random.Random(0)
    text = (FIXTURES / "dcgm" / "prometheus-query-k8s-b200.json").read_text(encoding="utf-8")
    source = rack_source(topology)
    for _ in range(8 * MUTATIONS):
        body = mutate_json(rng, text)
        try:
            result = _vector(Fetched("http://p:9090/api/v1/query", body))
            ts, val = _columns(result)
        except ValueError:
            pass
        else:
            assert ts.size == val.size == len(result)
            assert np.all(np.isfinite(ts)) and np.all(np.abs(ts) <= MAX_TIMESTAMP_S)
        answers["good"] = answers["bad"] = body
        source.collect(100.0)  # and the whole source: notices, never an exception


# ---------------------------------------------------------------- Slurm


def resv(end: Any, start: Any = 1_000) -> str:
    return json.dumps({"reservations": [
        {"name": "fw", "node_list": "n[1-2]", "flags": ["MAINT"], "start_time": start, "end_time": end}
    ]})  # fmt: skip


def test_a_reservation_without_an_end_is_active_once_started() -> None:
    """An infinite end time was read as no end time, so a MAINT reservation was INACTIVE and the
    actuator would have drained nodes inside it."""
    for end in ({"set": True, "infinite": True, "number": 0}, {"set": False, "infinite": True, "number": 0}):
        [r], problems, _ = parse_reservations_json(resv(end), now=2_000.0)
        assert problems == () and r.active and r.maintenance and r.end == math.inf
        [r], _, _ = parse_reservations_json(resv(end, start={"set": True, "number": 3_000}), now=2_000.0)
        assert not r.active  # not started yet
    [r], _, _ = parse_reservations_json(resv({"set": False, "infinite": False, "number": 0}), now=2_000.0)
    assert not r.active and r.end is None  # no end time: unknown, as before


def test_infinite_and_nan_numbers_in_squeue_json_are_problems_not_exceptions() -> None:
    """Python's json reads Infinity, NaN and 1e999; int(inf) raised OverflowError out of the parser."""
    text = (
        '{"jobs": ['
        '{"job_id": Infinity, "job_state": "RUNNING", "nodes": "n1"},'
        '{"job_id": 1e999, "job_state": "RUNNING", "nodes": "n1"},'
        '{"job_id": 7, "array_job_id": 7, "array_task_id": 1e999, "job_state": "RUNNING", "nodes": "n1"},'
        '{"job_id": 8, "job_state": "RUNNING", "nodes": "n1", "start_time": NaN},'
        '{"job_id": 9, "job_state": "RUNNING", "nodes": "n1", "node_count": -Infinity},'
        '{"job_id": 10, "job_state": "RUNNING", "nodes": "n1", "node_count": 1e999, "time_limit": 1e999},'
        '{"job_id": ' + "9" * 400 + ', "job_state": "RUNNING", "nodes": "n1"}'
        "]}"
    )
    jobs, problems, _ = parse_jobs_json(text)
    assert [j.job_id for j in jobs] == ["7", "10"] and jobs[1].end is None  # infinite time limit: no end
    assert problems == (
        "job inf: no job_id",
        "job inf: no job_id",
        "job 8: a number, not nan",
        "job 9: a number, not -inf",
        f"job {'9' * 40}: int too large to convert to float",
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"jobs": ' + DEEP + "}", "nested too deeply"),
        ('{"jobs": [' + "1" * 5000 + "]}", "Exceeds the limit (4300 digits)"),
    ],
)
def test_json_no_reader_can_hold_is_a_json_form_error(text: str, said: str) -> None:
    with pytest.raises(JsonFormError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_document(text, "jobs")


def test_a_node_count_of_5000_digits_in_squeue_text_is_no_count() -> None:
    """int() of more than 4,300 digits raised ValueError out of parse_jobs."""
    jobs, problems = parse_jobs("17|RUNNING|p|u|" + "9" * 5000 + "|N/A|N/A|n1|job\n")
    assert [j.job_id for j in jobs] == ["17"] and problems == ()


def test_slurm_messages_of_an_odd_shape_are_kept_as_messages() -> None:
    jobs, problems, _ = parse_jobs_json('{"jobs": [], "errors": 3.5, "warnings": "slow"}')
    assert jobs == () and problems == ("Slurm error: 3.5", "Slurm warning: slow")


def printing(expr: str) -> list[str]:
    """A command printing the Python expression ``expr``: a stand-in for a Slurm client."""
    return [sys.executable, "-c", f"import sys; sys.stdout.write({expr})"]


def job_forms(
    json_expr: str, parse_json: Callable[[str], Any] | None = None
) -> tuple[SlurmReader, list[_Form[SlurmJob]]]:
    reader = SlurmReader(SlurmConfig())
    real_json, real_text = reader.job_forms()
    forms = [
        _Form("squeue --json", printing(json_expr), parse_json or real_json.parse),
        _Form("text", printing(repr("17|RUNNING|p|u|1|N/A|N/A|n1|job\n")), real_text.parse),
    ]
    return reader, forms


def test_json_nested_too_deep_for_the_reader_falls_back_to_text() -> None:
    reader, forms = job_forms("'{\"jobs\": ' + '[' * 100_000 + ']' * 100_000 + '}'")
    got = reader.read("jobs", forms)
    assert [j.job_id for j in got.records or ()] == ["17"] and got.form == "text"
    [notice] = got.notices
    assert notice.where == " ".join(forms[0].argv) and "nested too deeply" in notice.message


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (
            LookupError("a bug"),
            "LookupError: a bug while reading the output (a seamguard bug: please report it)",
        ),
        (OverflowError("big"), "could not read the output: OverflowError('big')"),
    ],
)
def test_an_unforeseen_exception_in_one_form_is_a_notice_and_the_next_form_is_read(
    exc: Exception, said: str
) -> None:
    def buggy(text: str) -> Any:
        raise exc

    reader, forms = job_forms(repr('{"jobs": []}'), buggy)
    got = reader.read("jobs", forms)
    assert [j.job_id for j in got.records or ()] == ["17"] and got.form == "text"
    [notice] = got.notices
    assert notice.where == " ".join(forms[0].argv)
    assert notice.message.startswith(said) and "read with" in notice.message  # and the form read instead


def slurm_parser(path: Path) -> tuple[Callable[[str], object], type[Exception] | tuple[()]]:
    """The parser of a Slurm fixture, and the one exception it may raise (the JSON readers refuse
    a document that is not the one the command prints; the text readers never raise)."""
    name = path.name
    if name.endswith(".json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if "reservations" in doc:
            return (lambda t: parse_reservations_json(t, 1.74e9)), JsonFormError
        return (parse_jobs_json if "jobs" in doc else parse_nodes_json), JsonFormError
    if name.startswith("scontrol_node_oneliner"):
        return parse_nodes, ()
    if name.startswith("scontrol_reservation_oneliner"):
        return parse_reservations, ()
    return parse_jobs, ()


SLURM_FIXTURES = sorted(
    p for p in (FIXTURES / "slurm").iterdir()
    if p.suffix == ".json" or p.name.startswith(("scontrol_node_oneliner", "scontrol_reservation_oneliner", "squeue_text"))
)  # fmt: skip


@pytest.mark.parametrize("path", SLURM_FIXTURES, ids=lambda p: p.name)
def test_mutated_slurm_output_raises_nothing_but_json_form_error(path: Path) -> None:
    rng = random.Random(0)
    text = path.read_text(encoding="utf-8")
    read, refusal = slurm_parser(path)
    for _ in range(MUTATIONS):
        body = mutate_json(rng, text) if path.suffix == ".json" else mutate_exposition(rng, text)
        with contextlib.suppress(refusal):
            read(body)

"""The exposition parser against the real grammars: the OpenMetrics project's own parser suite
(``tests/fixtures/openmetrics``, see its README) with ``prometheus_client.openmetrics.parser`` as
the reference for values, and Prometheus text 0.0.4 cases transcribed from Prometheus's own tests.

The rule: a good exposition reads exactly as the reference reads it (but for a timestamp no
exporter means as a date, ``GOOD_FLAGGED``); a bad one whose badness can change a value (a number
float() reads but the grammar does not, a cut-off body) is flagged and never delivers a wrong value;
a bad one that is only about metadata, type rules, exemplars or ordering may be accepted, each
listed below with why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as reference_families

from seamguard.telemetry.sources.openmetrics import ExpositionError, Parsed, SeriesCache, parse

SUITE = Path(__file__).parent / "fixtures" / "openmetrics"
CASES = sorted(p.name for p in SUITE.iterdir() if p.is_dir())
NAN = math.nan

Key = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted labels)
Samples = dict[Key, list[tuple[float, float]]]  # per series, in order: (value, timestamp s or NaN)


def case(name: str) -> tuple[str, bool]:
    """The case's exposition text and whether the suite says it must parse."""
    spec = json.loads((SUITE / name / "test.json").read_text())
    return (SUITE / name / spec["file"]).read_text(encoding="utf-8"), bool(spec["shouldParse"])


class Reader:
    """Our parser with a resolver that hands out one slot per series and remembers its key, so
    samples can be compared per series with another parser's."""

    def __init__(self) -> None:
        self.series: list[Key] = []
        self.cache = SeriesCache(self.resolve)

    def resolve(self, name: str, labels: dict[str, str]) -> int:
        self.series.append((name, tuple(sorted(labels.items()))))
        return len(self.series) - 1

    def read(self, text: str, openmetrics: bool | None, fraction: float = 1.0) -> Parsed:
        return parse(text, self.cache, where="case", openmetrics=openmetrics, max_malformed_fraction=fraction)

    def samples(self, parsed: Parsed) -> Samples:
        out: Samples = {}
        for s, v, t in zip(
            parsed.slot.tolist(), parsed.value.tolist(), parsed.timestamp.tolist(), strict=True
        ):
            out.setdefault(self.series[s], []).append((v, t))
        return out


def reference(text: str) -> Samples:
    out: Samples = {}
    for fam in reference_families(text):
        for s in fam.samples:
            t = NAN if s.timestamp is None else float(s.timestamp)
            out.setdefault((s.name, tuple(sorted(s.labels.items()))), []).append((float(s.value), t))
    return out


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same_samples(got: Samples, want: Samples) -> None:
    """Values exactly (NaN equals NaN); timestamps to the nanosecond prometheus_client keeps."""
    assert got.keys() == want.keys()
    for key, rows in want.items():
        assert len(got[key]) == len(rows), key
        for (v, t), (v2, t2) in zip(got[key], rows, strict=True):
            assert same_number(v, v2), (key, v, v2)
            assert (math.isnan(t) and math.isnan(t2)) or math.isclose(t, t2, rel_tol=1e-15, abs_tol=1e-9), (
                key, t, t2,
            )  # fmt: skip


# ---- the suite's good cases ----------------------------------------------------------------------
GOOD = [c for c in CASES if case(c)[1]]
BAD = [c for c in CASES if not case(c)[1]]
# Good by the grammar, refused by us on purpose: the series whose one line is flagged, and why.
# A timestamp of 1.2e19 s (year ~391 billion) is no date: it overflows what turns seconds into
# integers or dates, and would pin its series as "latest" in the store (MAX_TIMESTAMP_S).
GOOD_FLAGGED = {"timestamps": (("a_total", (("foo", "4"),)), "past year 5138")}


def test_the_suite_is_all_there() -> None:
    assert len(CASES) == 211 and len(GOOD) == 44 and len(BAD) == 167


@pytest.mark.parametrize("name", GOOD)
def test_good_case_reads_as_the_reference_reads_it(name: str) -> None:
    """Zero malformed lines, and every sample's value and timestamp (seconds) equal to
    prometheus_client's; on the first scrape (cold key cache) and the next (every key cached),
    with the content type saying OpenMetrics and with it unknown (found by ``# EOF``)."""
    text, _ = case(name)
    want = reference(text)
    flagged, why = GOOD_FLAGGED.get(name, (None, ""))
    if flagged is not None:
        del want[flagged]
    for openmetrics in (True, None):
        reader = Reader()
        for scrape in ("cold", "warm"):
            parsed = reader.read(text, openmetrics, fraction=0.0 if flagged is None else 1.0)
            if flagged is None:
                assert parsed.malformed == 0, (scrape, parsed.issues)
            else:
                assert parsed.malformed == 1 and why in parsed.issues[0].problem, (scrape, parsed.issues)
            assert_same_samples(reader.samples(parsed), want)


# ---- the suite's bad cases -----------------------------------------------------------------------
# Accepted knowingly: the badness cannot change a value we deliver. Each entry: why, then the
# samples delivered, in line order (a value, or (value, timestamp in seconds)).
METADATA = "HELP/TYPE/UNIT lines malformed, repeated or misplaced: series are mapped by name, not metadata"
TYPE_RULE = (
    "a type's rule on values or labels (counts negative or NaN, info/stateset not 1, buckets missing, "
    "unordered or not cumulative, no quantile/le label): each value is read as written, as the exporter "
    "sent it; what it means is the engine's mapping's business"
)
EXEMPLAR = "exemplar syntax or placement: exemplars are ignored; the sample's own value is intact"
ORDER = "families interleaved, timestamps repeated or going back: each sample is read as written"
PROM_TEXT = (
    "blanks OpenMetrics forbids but Prometheus text allows (several, a tab, trailing, a blank line, none "
    "after '}') or a trailing comma in a label set: reading them never changes a value"
)
AFTER_EOF = "text after the # EOF line is ignored: the exposition ended there"

Expected = tuple[float | tuple[float, float], ...]
ACCEPTED: dict[str, tuple[str, Expected]] = {
    "bad_blank_line": (PROM_TEXT, (1,)),
    **{f"bad_clashing_names_{i}": (METADATA, ()) for i in range(3)},
    "bad_counter_values_0": (TYPE_RULE, (NAN,)),
    "bad_counter_values_1": (TYPE_RULE, (-1,)),
    "bad_counter_values_2": (TYPE_RULE, (NAN,)),
    "bad_counter_values_3": (TYPE_RULE, (NAN,)),
    "bad_counter_values_4": (TYPE_RULE, (NAN,)),
    "bad_counter_values_5": (TYPE_RULE, (-1,)),
    "bad_counter_values_6": (TYPE_RULE, (-1,)),
    "bad_counter_values_7": (TYPE_RULE, (-1,)),
    "bad_counter_values_8": (TYPE_RULE, (1, 2, -1)),
    "bad_counter_values_9": (TYPE_RULE, (1, 2, 1)),
    "bad_counter_values_10": (TYPE_RULE, (NAN,)),
    "bad_counter_values_11": (TYPE_RULE, (-1, -1)),
    "bad_counter_values_12": (TYPE_RULE, (-1,)),
    "bad_counter_values_13": (TYPE_RULE, (1, -1)),
    "bad_counter_values_14": (TYPE_RULE, (1, NAN)),
    "bad_counter_values_15": (TYPE_RULE, (NAN,)),
    "bad_counter_values_16": (TYPE_RULE, (NAN,)),
    "bad_counter_values_17": (TYPE_RULE, (-1,)),
    "bad_counter_values_18": (TYPE_RULE, (-1,)),
    "bad_counter_values_19": (TYPE_RULE, (-1,)),
    "bad_exemplar_complex_chars": (EXEMPLAR, (1,)),
    **{f"bad_exemplar_timestamp_{i}": (EXEMPLAR, (1,)) for i in range(3)},
    **{f"bad_exemplars_{i}": (EXEMPLAR, (1,)) for i in range(3, 9)},
    "bad_exemplars_9": (EXEMPLAR, ((1, 1),)),
    "bad_exemplars_10": (EXEMPLAR, ((1, 1),)),
    **{f"bad_exemplars_on_unallowed_metric_types_{i}": (EXEMPLAR, (1,)) for i in range(3)},
    **{f"bad_exemplars_on_unallowed_samples_{i}": (EXEMPLAR, (1,)) for i in range(4)},
    "bad_grouping_or_ordering_0": (ORDER, (0, 0, 0, 0, 0, 0)),
    "bad_grouping_or_ordering_2": (ORDER, (0, 0, 0)),
    "bad_grouping_or_ordering_3": (ORDER, (0, 0, 0)),
    "bad_grouping_or_ordering_4": (ORDER, ((0, -1), (0, -2))),
    "bad_grouping_or_ordering_5": (ORDER, ((0, -1), (0, -1.1))),
    "bad_grouping_or_ordering_6": (ORDER, ((0, 1), (0, -1))),
    "bad_grouping_or_ordering_7": (ORDER, ((0, 1.1), (0, 1))),
    "bad_grouping_or_ordering_8": (ORDER, ((0, 1), (0, 0))),
    "bad_grouping_or_ordering_9": (ORDER, ((0, NAN), (0, 0))),
    "bad_grouping_or_ordering_10": (ORDER, ((0, 0), (0, NAN))),
    **{f"bad_help_{i}": (METADATA, ()) for i in range(5)},
    "bad_histograms_0": (TYPE_RULE, (1,)),
    "bad_histograms_1": (TYPE_RULE, (0, 0)),
    "bad_histograms_2": (TYPE_RULE, (0, 0)),
    "bad_histograms_3": (TYPE_RULE, (0, 0, 0, 0)),
    "bad_histograms_4": (TYPE_RULE, (0,)),  # "#a_sum 0" is a comment
    "bad_histograms_5": (TYPE_RULE, (0,)),
    "bad_histograms_6": (TYPE_RULE, (1,)),
    "bad_histograms_7": (TYPE_RULE, (1, -1, 1)),
    "bad_histograms_8": (TYPE_RULE, (0, 0)),
    "bad_histograms_9": (TYPE_RULE, (0, 0, 0)),
    "bad_histograms_10": (TYPE_RULE, (1, 1, 0)),
    "bad_histograms_11": (TYPE_RULE, (0, 1)),
    "bad_histograms_12": (TYPE_RULE, (0,)),
    "bad_histograms_13": (TYPE_RULE, (1, 0)),
    "bad_histograms_14": (TYPE_RULE, (0, 0)),
    "bad_info_and_stateset_values_0": (TYPE_RULE, (2,)),
    "bad_info_and_stateset_values_1": (TYPE_RULE, (2,)),
    "bad_invalid_labels_6": (PROM_TEXT, (1,)),  # a{a=" # "}1
    "bad_metadata": (METADATA, ()),
    **{f"bad_metadata_in_wrong_place_{i}": (METADATA, (1,)) for i in range(3)},
    "bad_missing_or_extra_commas_2": (PROM_TEXT, (1,)),  # a{a="1",b="2",} 1
    **{f"bad_missing_or_invalid_labels_for_a_type_{i}": (TYPE_RULE, (0,)) for i in range(8)},
    **{f"bad_repeated_metadata_{i}": (METADATA, ()) for i in range(4)},
    **{f"bad_stateset_info_values_{i}": (TYPE_RULE, (2,)) for i in range(4)},
    "bad_text_after_eof_0": (AFTER_EOF, (1,)),
    **{f"bad_type_{i}": (METADATA, ()) for i in range(8)},
    **{f"bad_unit_{i}": (METADATA, ()) for i in range(8)},
    "bad_value_1": (PROM_TEXT, (1,)),  # "a  1"
    "bad_value_2": (PROM_TEXT, (1,)),  # "a 1<tab>"
    "bad_value_3": (PROM_TEXT, (1,)),  # "a 1 "
}

# Flagged (malformed > 0, or the scrape refused): why, then the samples still delivered (the other
# lines' own, never the bad line's).
NUMBER = "not a number by the grammar, though Python's float() reads some of it (1_2 would be 12)"
TIMESTAMP = "timestamp not a finite decimal number of seconds"
LABELS = "label set does not parse: which series the value belongs to is unknown"
NAME = "no metric name, or a name run into other characters"
SPLIT = "the text after the label set is not a value, an optional timestamp and an exemplar"
CUT = "no # EOF: the body was cut off"

FLAGGED: dict[str, tuple[str, Expected]] = {
    **{f"bad_exemplars_{i}": (SPLIT, ()) for i in (0, 1, 2, 11, 12)},
    "bad_grouping_or_ordering_1": (LABELS, (0, 0)),  # le="+Inf"" on the middle line
    **{f"bad_invalid_labels_{i}": (LABELS, ()) for i in (0, 1, 2, 3, 4, 5, 7, 8)},
    **{f"bad_metric_names_{i}": (NAME, ()) for i in range(3)},
    **{f"bad_missing_equal_or_label_value_{i}": (LABELS, ()) for i in range(5)},
    "bad_missing_or_extra_commas_0": (LABELS, ()),
    "bad_missing_or_extra_commas_1": (LABELS, ()),
    **{f"bad_missing_or_wrong_quotes_on_label_value_{i}": (LABELS, ()) for i in range(3)},
    "bad_missing_value_0": (SPLIT, ()),
    "bad_missing_value_1": (SPLIT, ()),
    "bad_no_eof": (CUT, ()),
    "bad_text_after_eof_1": (CUT, (1,)),  # "# EOFblah" is no EOF line
    **{f"bad_timestamp_{i}": (TIMESTAMP, ()) for i in range(9)},
    "bad_value_0": (NUMBER, ()),
    **{f"bad_value_{i}": (NUMBER, ()) for i in range(4, 13)},
}


def test_every_bad_case_has_a_decision() -> None:
    assert not ACCEPTED.keys() & FLAGGED.keys()
    assert sorted(ACCEPTED.keys() | FLAGGED.keys()) == BAD


def flat(expected: Expected) -> list[tuple[float, float]]:
    return [(float(e), NAN) if isinstance(e, int | float) else (float(e[0]), float(e[1])) for e in expected]


def delivered(text: str) -> tuple[list[tuple[float, float]], int, bool]:
    """Samples in line order, malformed count, and whether the scrape was refused."""
    reader = Reader()
    try:
        parsed = reader.read(text, openmetrics=True, fraction=0.5)
    except ExpositionError:
        return [], 1, True
    rows = list(zip(parsed.value.tolist(), parsed.timestamp.tolist(), strict=True))
    return rows, parsed.malformed, False


def assert_rows(got: list[tuple[float, float]], want: list[tuple[float, float]]) -> None:
    assert len(got) == len(want), (got, want)
    for (v, t), (v2, t2) in zip(got, want, strict=True):
        assert same_number(v, v2) and same_number(t, t2), (got, want)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_bad_case_we_knowingly_accept_delivers_the_values_as_written(name: str) -> None:
    rows, malformed, refused = delivered(case(name)[0])
    assert not refused and malformed == 0
    assert_rows(rows, flat(ACCEPTED[name][1]))


@pytest.mark.parametrize("name", sorted(FLAGGED))
def test_bad_case_that_could_change_a_value_is_flagged(name: str) -> None:
    rows, malformed, refused = delivered(case(name)[0])
    assert malformed > 0 or refused
    assert_rows(rows, flat(FLAGGED[name][1]))


@pytest.mark.parametrize("name", [c for c in FLAGGED if c.startswith(("bad_value_", "bad_timestamp_"))])
def test_bad_number_is_flagged_on_the_hot_path_too(name: str) -> None:
    """The series key already cached (a previous good scrape): the value arrives through the bulk
    path, which must apply the grammar as the full parse does."""
    reader = Reader()
    first = reader.read("a 0\n# EOF\n", openmetrics=True)
    assert first.malformed == 0 and len(first) == 1
    parsed = reader.read(case(name)[0], openmetrics=True)
    assert parsed.malformed == 1 and len(parsed) == 0, parsed


# ---- numbers Python reads and the grammar does not ----------------------------------------------
# Each would be delivered as the number on the right by float() / numpy.
FLOAT_TRAPS = {
    "1_2": 12.0,
    "1e5_0": 1e50,
    "1_000.5": 1000.5,
    "\uff11\uff12": 12.0,  # full-width digits
    "\u0661\u0662": 12.0,  # Arabic-Indic digits
    "\u00a012": 12.0,  # no-break space
    "12\u2003": 12.0,  # em space
    "-nan": NAN,
    "+NaN": NAN,
    "1\r": 1.0,  # a CRLF body
    "1\x0b": 1.0,
    "1\x0c": 1.0,
}


@pytest.mark.parametrize("raw", list(FLOAT_TRAPS), ids=[repr(r) for r in FLOAT_TRAPS])
@pytest.mark.parametrize("scrape", ["cold", "warm"])
def test_numbers_float_reads_but_the_grammar_does_not_are_malformed(raw: str, scrape: str) -> None:
    reader = Reader()
    lines = [f'm{{gpu="{i}"}} {i}' for i in range(9)]
    if scrape == "warm":
        assert reader.read("\n".join(lines) + "\n", openmetrics=False).malformed == 0
    lines[4] = f'm{{gpu="4"}} {raw}'
    parsed = reader.read("\n".join(lines) + "\n", openmetrics=False)
    assert parsed.malformed == 1 and parsed.issues[0].line == 5
    assert f"value {raw!r} is not a number" in parsed.issues[0].problem
    assert sorted(parsed.value.tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]  # the rest arrive, unharmed


def test_issue_text_names_the_underscore_and_the_carriage_return() -> None:
    reader = Reader()
    p = reader.read("a 1_2\nb 1\r\n", openmetrics=False, fraction=1.0)
    assert [str(i) for i in p.issues] == [
        "line 1: value '1_2' is not a number (no '_' digit separators in this format)",
        "line 2: value '1\\r' is not a number (a carriage return: lines must end with a bare newline)",
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1.0), ("-1.5", -1.5), ("+.5", 0.5), ("5.", 5.0), ("1e3", 1e3), ("1E+03", 1e3), ("-2.5e-3", -2.5e-3),
        ("0001.2e-1", 0.12), ("NaN", NAN), ("nan", NAN), ("+Inf", math.inf), ("-inf", -math.inf),
        ("Infinity", math.inf), ("-INFINITY", -math.inf), ("1e500", math.inf),
    ],
)  # fmt: skip
@pytest.mark.parametrize("scrape", ["cold", "warm"])
def test_numbers_of_the_grammar_read_as_float_reads_them(raw: str, value: float, scrape: str) -> None:
    """The same grammar for both formats: OpenMetrics ``number`` and Go's ParseFloat as expfmt and
    promparse use it (case-insensitive Inf/Infinity/NaN, a sign on Inf only; 1e500 is +Inf by
    IEEE rounding, which OpenMetrics' ABNF allows)."""
    reader = Reader()
    if scrape == "warm":
        reader.read("a 0\n", openmetrics=False)
    p = reader.read(f"a {raw}\n", openmetrics=False)
    assert p.malformed == 0 and same_number(float(p.value[0]), value)


# ---- cut-off bodies ------------------------------------------------------------------------------
def test_a_body_cut_anywhere_never_delivers_a_cut_value() -> None:
    """The suite's ``roundtrip`` exposition cut at every byte: whatever is delivered is exactly
    what the whole body says for that series; a cut inside a line (Prometheus text) or before
    ``# EOF`` (OpenMetrics) is flagged, naming the cut."""
    text, _ = case("roundtrip")
    eof = text.index("# EOF")
    prom = text[:eof]  # the same samples as Prometheus text: no # EOF, newline-terminated
    for body, openmetrics, whole_at in ((prom, False, len(prom)), (text, True, eof + len("# EOF"))):
        full = Reader()
        want = full.samples(full.read(body, openmetrics, fraction=0.0))
        assert full.read(body, openmetrics, fraction=0.0).malformed == 0
        for cut in range(len(body)):
            piece = body[:cut]
            reader = Reader()
            try:
                parsed = reader.read(piece, openmetrics, fraction=0.5)
            except ExpositionError as err:
                assert "cut off" in err.problem
                continue
            for key, rows in reader.samples(parsed).items():
                assert_rows(rows, want[key][: len(rows)])
            # A cut on a line boundary cannot be seen in Prometheus text; OpenMetrics has # EOF for that.
            whole = cut >= whole_at if openmetrics else cut == 0 or piece.endswith("\n")
            if whole:
                assert parsed.malformed == 0, (openmetrics, cut, parsed.issues)
            else:
                assert parsed.malformed == 1, (openmetrics, cut, parsed.issues)
                assert (
                    "cut off" in parsed.issues[0].problem and parsed.issues[0].line == piece.count("\n") + 1
                )


def test_the_cut_line_is_named_and_the_lines_before_it_are_kept() -> None:
    reader = Reader()
    p = reader.read('temp{gpu="0"} 61\ntemp{gpu="1"} 4', openmetrics=False)  # 45, cut to 4
    assert p.value.tolist() == [61.0] and p.malformed == 1 and p.lines == 2
    assert str(p.issues[0]) == (
        "line 2: body ends without a newline: the scrape was cut off, last line (...'temp{gpu=\"1\"} 4') dropped"
    )
    om = reader.read('temp{gpu="0"} 61\ntemp{gpu="1"} 45\n', openmetrics=True)
    assert om.value.tolist() == [61.0, 45.0] and om.malformed == 1  # all there, but no # EOF: flagged
    assert str(om.issues[0]) == "line 3: no '# EOF' line: the OpenMetrics body was cut off"
    with pytest.raises(ExpositionError, match=r"case:1: 1 of 1 sample lines malformed.*no '# EOF' line"):
        reader.read("", openmetrics=True, fraction=0.5)  # an OpenMetrics body with nothing in it
    assert len(reader.read("", openmetrics=False)) == 0  # an empty Prometheus text body is valid


# ---- Prometheus text 0.0.4: blanks and other cases from Prometheus's own tests -------------------
def prom(text: str) -> tuple[list[tuple[Key, float, float]], Parsed]:
    reader = Reader()
    parsed = reader.read(text, openmetrics=False, fraction=1.0)
    rows = [
        (reader.series[s], v, t)
        for s, v, t in zip(
            parsed.slot.tolist(), parsed.value.tolist(), parsed.timestamp.tolist(), strict=True
        )
    ]
    return rows, parsed


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def assert_prom_rows(got: list[tuple[Key, float, float]], want: list[tuple[Key, float, float]]) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for (k, v, t), (_, v2, t2) in zip(got, want, strict=True):
        assert same_number(v, v2) and same_number(t, t2), (k, v, v2, t, t2)


def test_expfmt_whitespace_escapes_and_comments() -> None:
    """prometheus/common expfmt/text_parse_test.go, testTextParse scenarios 2 and 3 (blanks and tabs
    in label sets, a blank before '{', none after '}', indented comments, a leading-zero value,
    negative timestamps). Timestamps are milliseconds in Prometheus text; we report seconds."""
    rows, parsed = prom(
        "\n# A normal comment.\n#\n# TYPE name counter\n"
        'name{labelname="val1",basename="basevalue"} NaN\n'
        'name {labelname="val2",basename="base\\"v\\\\al\\nue"} 0.23 1234567890\n'
        "# HELP name two-line\\n doc  str\\\\ing\n\n"
        ' # HELP  name2  \tdoc str"ing 2\n'
        "  #    TYPE    name2 gauge\n"
        'name2{labelname="val2"\t,basename   =   "basevalue2"\t\t} +Inf 54321\n'
        'name2{ labelname = "val1" , }-Inf\n'
        "# TYPE my_summary summary\n"
        'my_summary{n1="val1",quantile="0.5"} 110\n'
        "decoy -1 -2\n"
        'my_summary{n1="val1",quantile="0.9"} 140 1\n'
        'my_summary_sum{n1="val2"} 08 15\n'
        'my_summary{n1="val3", quantile="0.2"} 4711\n'
        '  my_summary{n1="val1",n2="val2",quantile="-12.34",} NaN\n'
    )
    assert parsed.malformed == 0, parsed.issues
    assert_prom_rows(rows, [
        (key("name", labelname="val1", basename="basevalue"), NAN, NAN),
        (key("name", labelname="val2", basename='base"v\\al\nue'), 0.23, 1234567.890),
        (key("name2", labelname="val2", basename="basevalue2"), math.inf, 54.321),
        (key("name2", labelname="val1"), -math.inf, NAN),
        (key("my_summary", n1="val1", quantile="0.5"), 110, NAN),
        (key("decoy"), -1, -0.002),
        (key("my_summary", n1="val1", quantile="0.9"), 140, 0.001),
        (key("my_summary_sum", n1="val2"), 8, 0.015),
        (key("my_summary", n1="val3", quantile="0.2"), 4711, NAN),
        (key("my_summary", n1="val1", n2="val2", quantile="-12.34"), NAN, NAN),
    ])  # fmt: skip


def test_promparse_whitespace_cases() -> None:
    """prometheus/prometheus model/textparse/promparse_test.go, TestPromParse: blanks around label
    names, '=' and values, a blank before '{', a trailing comma, a tab before the value, blanks
    and a tab before a timestamp, a NUL in a label value."""
    rows, parsed = prom(
        "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n"
        "# \tTYPE go_gc_duration_seconds summary\n"
        'go_gc_duration_seconds{quantile="0"} 4.9351e-05\n'
        'go_gc_duration_seconds{quantile="0.25",} 7.424100000000001e-05\n'
        'go_gc_duration_seconds{quantile="0.8", a="b"} 8.3835e-05\n'
        'go_gc_duration_seconds{ quantile="0.9", a="b"} 8.3835e-05\n'
        "# Hrandom comment starting with prefix of HELP\n#\n"
        'go_gc_duration_seconds{ quantile="1.0", a="b" } 8.3835e-05\n'
        'go_gc_duration_seconds { quantile= "1.0", a= "b", } 8.3835e-05\n'
        'go_gc_duration_seconds { quantile = "1.0", a = "b" } 8.3835e-05\n'
        'some:aggregate:rate5m{a_b="c"}\t1\n'
        "go_goroutines 33  \t123123\n"
        "_metric_starting_with_underscore 1\n"
        'testmetric{label="\\"bar\\""} 1\n'
        'null_byte_metric{a="abc\x00"} 1\n'
    )
    assert parsed.malformed == 0, parsed.issues
    q1 = key("go_gc_duration_seconds", quantile="1.0", a="b")
    assert_prom_rows(rows, [
        (key("go_gc_duration_seconds", quantile="0"), 4.9351e-05, NAN),
        (key("go_gc_duration_seconds", quantile="0.25"), 7.424100000000001e-05, NAN),
        (key("go_gc_duration_seconds", quantile="0.8", a="b"), 8.3835e-05, NAN),
        (key("go_gc_duration_seconds", quantile="0.9", a="b"), 8.3835e-05, NAN),
        (q1, 8.3835e-05, NAN), (q1, 8.3835e-05, NAN), (q1, 8.3835e-05, NAN),
        (key("some:aggregate:rate5m", a_b="c"), 1, NAN),
        (key("go_goroutines"), 33, 123.123),
        (key("_metric_starting_with_underscore"), 1, NAN),
        (key("testmetric", label='"bar"'), 1, NAN),
        (key("null_byte_metric", a="abc\x00"), 1, NAN),
    ])  # fmt: skip


def test_blank_forms_read_the_same_on_the_hot_path() -> None:
    """The key cache is keyed by the text before the value: every blank form must read the same
    value on the next scrape, when its key is cached, as on the first."""
    forms = [
        'm {a="1"} V', 'm{ a = "1" , } V', "m\tV", "  m V", "m  V", "m V ", "m V\t", 'm{a="1"}V', "m \tV 1700",
    ]  # fmt: skip
    reader = Reader()
    for value in ("1", "2.5", "-3", "NaN"):
        parsed = reader.read("\n".join(f.replace("V", value) for f in forms) + "\n", False)
        assert parsed.malformed == 0, (value, parsed.issues)
        rows = parsed.value.tolist()
        assert len(rows) == len(forms) and all(same_number(v, float(value)) for v in rows), (value, rows)
    assert {name for name, _ in reader.series} == {"m"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # expfmt text_parse_test.go, testTextParseError
        ('metric{label="bla"} 3.14 2.72\n', "timestamp '2.72' is not an integer count of milliseconds"),
        ('metric{label="bla"} 3.14 2 3\n', "expected a value and an optional timestamp"),
        ('metric{label="bla"} blubb\n', "value 'blubb' is not a number"),
        ('metric{@="bla"} 3.14\n', "bad label name"),
        ('metric{label+="bla"} 3.14\n', "label 'label': expected =\"value\""),
        ("metric{label=bla} 3.14\n", "label 'label': expected =\"value\""),
        ('metric{label="bla"+} 3.14\n', "expected ',' or '}' after label 'label'"),
        ('metric{label="bla",label="bla"} 3.14\n', "label 'label' repeated"),
        ('@invalidmetric{label="bla"} 3.14 2\n', "expected a metric name"),
        ('{label="bla"} 3.14 2\n', "expected a metric name"),
        ("foo 1_2\n", "value '1_2' is not a number"),
        ("foo 0x1p-3\n", "value '0x1p-3' is not a number"),
        ("foo 0x1P-3\n", "value '0x1P-3' is not a number"),
        ("foo 0B1\n", "value '0B1' is not a number"),
        ("foo 0O1\n", "value '0O1' is not a number"),
        ("foo 0X1\n", "value '0X1' is not a number"),
        ("foo 0x1\n", "value '0x1' is not a number"),
        ("foo 0b1\n", "value '0b1' is not a number"),
        ("foo 0o1\n", "value '0o1' is not a number"),
        # promparse_test.go, TestPromParseErrors
        ("a\n", "expected a value after 'a'"),
        ("a{b='c'} 1\n", "label 'b': expected =\"value\""),
        ("a true\n", "value 'true' is not a number"),
        ('empty_label_name{=""} 0\n', "bad label name"),
        ("foo 0 1_2\n", "timestamp '1_2' is not an integer count of milliseconds"),
        ('a{b="\x00ss"} 1 1\x00\n', "timestamp '1\\x00' is not an integer"),
        # promparse accepts this one ("appears to be unintended and should probably be fixed"); expfmt
        # and OpenMetrics do not, and neither do we
        ('go_gc_duration_seconds { quantile = "2.0" a = "b" } 8.3835e-05\n', "expected ',' or '}'"),
    ],
)
def test_prometheus_text_bad_lines_are_flagged(text: str, why: str) -> None:
    rows, parsed = prom(text)
    assert rows == [] and parsed.malformed == 1 and why in parsed.issues[0].problem, parsed.issues


def test_prometheus_text_cases_we_read_differently_from_expfmt() -> None:
    """expfmt refuses an unknown escape (``\\t``) in a label value; promparse, OpenMetrics
    (``BS normal-char``) and prometheus_client keep it as written, and so do we: a label, never a
    value. expfmt's missing final newline refuses the whole body; we drop only the cut line."""
    rows, parsed = prom('metric{label="\\t"} 3.14\n')
    assert parsed.malformed == 0
    assert_prom_rows(rows, [(key("metric", label="\\t"), 3.14, NAN)])
    rows, parsed = prom("\nbla 3.14\nblubber 42")
    assert parsed.malformed == 1
    assert_prom_rows(rows, [(key("bla"), 3.14, NAN)])
    assert "cut off" in parsed.issues[0].problem and parsed.issues[0].line == 3


def test_a_comment_without_a_space_does_not_hide_later_lines() -> None:
    """A bare ``#`` once made the empty key a comment, and on the next scrape every line without
    a space (a tab-separated sample, or garbage) was skipped unseen."""
    reader = Reader()
    for _ in range(2):
        p = reader.read("#\nfoo\na\t7\n", openmetrics=False)
        assert p.malformed == 1 and p.issues[0].line == 2 and p.value.tolist() == [7.0]


def test_numpy_reads_what_the_hot_path_hands_it_as_python_does() -> None:
    """The hot path trusts numpy's string conversion once the grammar check passed; numpy must
    read every grammar form as float() does."""
    forms = ["1", "-0", "+.5", "5.", "1e3", "1E-3", "0001.2e-1", "9223372036854775808", "NaN", "-Inf"]
    got = np.asarray(forms, dtype=np.float64)
    assert all(same_number(float(g), float(f)) for g, f in zip(got.tolist(), forms, strict=True))


def test_values_of_series_the_caller_ignores_are_not_looked_at() -> None:
    """A series the resolver turns down never reaches the engine, so its value cannot be wrong
    there; it is not counted as malformed, on the first scrape or any later one (cached key)."""
    cache = SeriesCache(lambda name, labels: -1 if name == "skip" else 0)
    for _ in range(2):
        p = parse("skip 1_2\nkeep 3\n", cache, where="t", openmetrics=False)
        assert p.malformed == 0 and p.value.tolist() == [3.0]

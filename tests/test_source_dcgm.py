"""DCGM mapping, exposition parsing and per-series resolution: labels, sentinels, counters, XIDs."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from seamguard.errors import InputError
from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm import (
    DcgmSourceConfig,
    DcgmTarget,
    HostnameRule,
    Role,
    dcgm_mapping,
    parse_mapping,
)
from seamguard.telemetry.sources.openmetrics import ExpositionError, SeriesCache, parse
from seamguard.telemetry.store import TelemetryStore

CAT = signal_catalog()


def line(field: str, host: str, gpu: object, value: object, **extra: str) -> str:
    labels = {"gpu": str(gpu), "UUID": f"GPU-{host}-{gpu}", "Hostname": host, **extra}
    return f"{field}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in labels.items())}}} {value}"


def scrape(target: DcgmTarget, lines: list[str], now: float = 100.0) -> tuple[TelemetryBatch, object]:
    parsed = parse("\n".join(lines) + "\n", target.cache, where="test")
    return target.convert(parsed.slot, parsed.value, parsed.timestamp, now)


def values(batch: TelemetryBatch, topo: Topology, signal: str) -> dict[str, float]:
    pick = batch.signal == CAT[signal].index
    return {
        topo.ids[e]: v for e, v in zip(batch.entity[pick].tolist(), batch.value[pick].tolist(), strict=True)
    }


def test_mapping_covers_the_required_fields_with_kinds_that_fit() -> None:
    m = dcgm_mapping().fields
    want = {
        "DCGM_FI_DEV_GPU_TEMP": "gpu.temp_c", "DCGM_FI_DEV_MEMORY_TEMP": "gpu.mem_temp_c",
        "DCGM_FI_DEV_SM_CLOCK": "gpu.sm_clock_mhz", "DCGM_FI_DEV_POWER_USAGE": "gpu.power_w",
        "DCGM_FI_DEV_GPU_UTIL": "gpu.util_pct", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "gpu.throttle_reasons",
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "gpu.throttle_reasons", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "gpu.ecc_sbe_total",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "gpu.ecc_dbe_total",
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": "gpu.nvlink_errors_total",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "gpu.pcie_replay_total", "DCGM_FI_DEV_ROW_REMAP_PENDING": "gpu.row_remap_pending",
        "DCGM_EXP_XID_ERRORS_TOTAL": "gpu.xid", "DCGM_FI_DEV_XID_ERRORS": "gpu.xid",
    }  # fmt: skip
    assert {k: m[k].signal for k in want} == want
    assert CAT["gpu.ecc_sbe_total"].kind is SignalKind.COUNTER
    assert not m["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"].default and m["DCGM_FI_DEV_GPU_TEMP"].default
    assert m["DCGM_EXP_XID_ERRORS_TOTAL"].role is Role.XID_COUNTER
    # every signal the twin's exporter renders has exactly one rendered non-event field
    for sig, fields in dcgm_mapping().rendered().items():
        assert len(fields) == (2 if sig == "gpu.xid" else 1)


def test_mapping_errors_name_the_field() -> None:
    with pytest.raises(InputError, match=r"fields.X: unknown signal 'gpu.nope'"):
        parse_mapping({"fields": {"X": {"signal": "gpu.nope"}}}, "m.yaml")
    with pytest.raises(InputError, match="role sum needs a counter"):
        parse_mapping({"fields": {"X": {"signal": "gpu.temp_c", "role": "sum"}}}, "m.yaml")


def test_values_labels_case_and_hostname_rule(topology: Topology) -> None:
    cfg = DcgmSourceConfig(hostname=HostnameRule(strip_suffixes=(".cluster.local",)))
    t = DcgmTarget(topology, cfg)
    batch, tally = scrape(t, [
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).",
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
        line("DCGM_FI_DEV_GPU_TEMP", "n01.cluster.local", 2, 71),
        'DCGM_FI_DEV_POWER_USAGE{gpu="3",hostname="n02",modelName="NVIDIA H100 80GB HBM3"} 512.25',
        line("DCGM_FI_DEV_FB_USED", "n01", 0, 1000),
    ])  # fmt: skip
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n01/2": 71.0}
    assert values(batch, topology, "gpu.power_w") == {"gpu/n02/3": 512.25}
    assert tally.unknown == {"DCGM_FI_DEV_FB_USED": 1}  # type: ignore[attr-defined]


def test_uuid_override_and_endpoint_node(topology: Topology) -> None:
    cfg = DcgmSourceConfig(uuid_entities={"GPU-abc": "gpu/n05/1"})
    t = DcgmTarget(topology, cfg, node="n04")
    batch, _ = scrape(t, [
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-abc",Hostname="elsewhere"} 60',
        'DCGM_FI_DEV_GPU_TEMP{gpu="2"} 61',
    ])  # fmt: skip
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n05/1": 60.0, "gpu/n04/2": 61.0}
    with pytest.raises(ValidationError, match="expected gpu/<node>/<index>"):
        DcgmSourceConfig(uuid_entities={"GPU-abc": "node/n05"})


def test_wrong_types_are_skipped_with_a_reason_and_the_rest_arrives(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    text = "\n".join([
        line("DCGM_FI_DEV_GPU_TEMP", "n00", "abc", 50),  # not a GPU index
        line("DCGM_FI_DEV_GPU_TEMP", "n99", 0, 50),  # not in the inventory
        line("DCGM_FI_DEV_GPU_TEMP", "n00", 1, "hot"),  # not a number
        'DCGM_FI_DEV_GPU_TEMP{gpu="3"} 40',  # no Hostname and no node for the endpoint
        line("DCGM_FI_DEV_GPU_TEMP", "n00", 0, 55),
        line("DCGM_FI_DEV_SM_CLOCK", "n00", 0, 1980),
    ]) + "\n"  # fmt: skip
    parsed = parse(text, t.cache, where="http://h:9400/metrics", max_malformed_fraction=0.5)
    assert (
        parsed.malformed == 1
        and parsed.issues[0].line == 3
        and "'hot' is not a number" in parsed.issues[0].problem
    )
    batch, tally = t.convert(parsed.slot, parsed.value, parsed.timestamp, 1.0)
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n00/0": 55.0}
    assert values(batch, topology, "gpu.sm_clock_mhz") == {"gpu/n00/0": 1980.0}
    why = " | ".join(tally.rejected)
    assert "label gpu='abc' is not a GPU index" in why
    assert "gpu/n99/0 is not in the inventory" in why
    assert "no Hostname label" in why
    notes = [str(n) for n in tally.notices("dcgm", "http://h:9400/metrics")]
    assert any("1 series skipped: label gpu='abc'" in n for n in notes)


def test_trailing_spaces_and_non_ascii_digits_are_read_or_refused_on_every_scrape(topology: Topology) -> None:
    """A line ending in a space parses on later scrapes too (the cached path once took the empty
    field after it for a timestamp); a GPU label of a superscript digit is a rejected series, not
    an exception out of the source."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    for scrape_no, temp in enumerate((61, 62, 63)):
        text = (
            line("DCGM_FI_DEV_GPU_TEMP", "n00", 0, temp)
            + " \n"
            + line("DCGM_FI_DEV_GPU_TEMP", "n00", "\u00b2", 5)
        )
        parsed = parse(text + "\n", t.cache, where="test")
        assert parsed.malformed == 0, (scrape_no, parsed.issues)
        batch, tally = t.convert(parsed.slot, parsed.value, parsed.timestamp, 1.0 + scrape_no)
        assert values(batch, topology, "gpu.temp_c") == {"gpu/n00/0": float(temp)}
        assert any("is not a GPU index" in why for why in tally.rejected)


def test_sentinels_and_nan_are_missing_and_counted(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    batch, tally = scrape(t, [
        line("DCGM_FI_DEV_GPU_TEMP", "n00", 0, 9223372036854775794),
        line("DCGM_FI_DEV_MEMORY_TEMP", "n00", 0, 9218868437227405312),
        line("DCGM_FI_DEV_POWER_USAGE", "n00", 0, "NaN"),
        line("DCGM_FI_DEV_SM_CLOCK", "n00", 0, "+Inf"),
        line("DCGM_FI_DEV_GPU_UTIL", "n00", 0, 97),
    ])  # fmt: skip
    assert len(batch) == 1 and values(batch, topology, "gpu.util_pct") == {"gpu/n00/0": 97.0}
    assert tally.sentinel == 2 and tally.nonfinite == 2  # type: ignore[attr-defined]
    assert any("blank-sentinel" in str(n) for n in tally.notices("dcgm", "x"))  # type: ignore[attr-defined]


def test_nvlink_kinds_sum_and_counters_reset_in_the_store(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    store = TelemetryStore(topology, CAT)
    totals = []
    for now, (flit, data, sbe) in zip((10.0, 20.0, 30.0), ((3, 4, 100), (5, 4, 110), (5, 6, 2)), strict=True):
        batch, _ = scrape(t, [
            line("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "n01", 0, flit),
            line("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "n01", 0, data),
            line("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "n01", 0, sbe),  # 110 -> 2: a driver reload
        ], now)  # fmt: skip
        totals.append(values(batch, topology, "gpu.nvlink_errors_total")["gpu/n01/0"])
        store.ingest(now, batch)
    assert totals == [7.0, 9.0, 11.0]
    g = topology.local[topology.lookup("gpu/n01/0")]
    assert store.rate("gpu.ecc_sbe_total")[g] == pytest.approx(2 / 10)  # reset-aware, never negative


def test_an_nvlink_sum_missing_a_field_is_held_back_not_read_as_a_reset(topology: Topology) -> None:
    """One NVLink field blank for a scrape: the GPU's sum is not sent (it would fall, a fake reset,
    and the next whole sum would look like a burst of errors); the next whole scrape is sent."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    store = TelemetryStore(topology, CAT)
    sent = []
    for now, data in ((10.0, 4), (20.0, 9223372036854775794), (30.0, 4)):  # blank sentinel at 20 s
        batch, _ = scrape(t, [
            line("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "n01", 0, 3),
            line("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "n01", 0, data),
        ], now)  # fmt: skip
        sent.append(values(batch, topology, "gpu.nvlink_errors_total").get("gpu/n01/0"))
        store.ingest(now, batch)
    assert sent == [7.0, None, 7.0]
    g = topology.local[topology.lookup("gpu/n01/0")]
    assert store.rate("gpu.nvlink_errors_total")[g] == 0.0  # no errors happened, none are reported


def test_throttle_both_names_or_in_the_store(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    batch, _ = scrape(t, [
        line("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "n00", 1, 0x20),
        line("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "n00", 1, 0x40),
    ])  # fmt: skip
    store = TelemetryStore(topology, CAT)
    store.ingest(100.0, batch)
    assert store.current("gpu.throttle_reasons")[topology.local[topology.lookup("gpu/n00/1")]] == 0x60


def test_xid_counter_increments_are_events_and_win_over_the_gauge(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    xid = CAT["gpu.xid"].index

    def poll(n79: int, n48: int | None, gauge0: int, gauge1: int) -> list[tuple[str, int]]:
        lines = [
            line("DCGM_EXP_XID_ERRORS_TOTAL", "n00", 0, n79, xid="79"),
            line("DCGM_FI_DEV_XID_ERRORS", "n00", 0, gauge0),  # ignored: GPU 0 has the counter
            line("DCGM_FI_DEV_XID_ERRORS", "n00", 1, gauge1),  # GPU 1 has only the gauge
        ]
        if n48 is not None:
            lines.append(line("DCGM_EXP_XID_ERRORS_TOTAL", "n00", 0, n48, xid="48"))
        batch, _ = scrape(t, lines)
        pick = batch.signal == xid
        return sorted(
            (topology.ids[e], int(v)) for e, v in zip(batch.entity[pick], batch.value[pick], strict=True)
        )

    assert poll(2, None, 79, 13) == []  # first scrape: baseline only, old counts are not new events
    assert poll(2, None, 31, 13) == []  # nothing new
    assert poll(3, 1, 31, 43) == [("gpu/n00/0", 48), ("gpu/n00/0", 79), ("gpu/n00/1", 43)]
    assert poll(1, 1, 31, 43) == []  # window rolled / exporter restarted: a drop is no event


def test_xid_label_that_is_not_a_code_is_rejected(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    _, tally = scrape(t, [line("DCGM_EXP_XID_ERRORS_TOTAL", "n00", 0, 1, xid="oops")])
    assert any("label xid='oops' is not an XID code" in k for k in tally.rejected)  # type: ignore[attr-defined]


# ---- the exposition parser --------------------------------------------------------------------
def _recorder() -> tuple[SeriesCache, list[tuple[str, dict[str, str]]]]:
    seen: list[tuple[str, dict[str, str]]] = []

    def resolve(name: str, labels: dict[str, str]) -> int:
        seen.append((name, labels))
        return len(seen) - 1

    return SeriesCache(resolve), seen


def test_parser_escapes_timestamps_and_openmetrics() -> None:
    cache, seen = _recorder()
    text = (
        "# HELP m A metric\n# TYPE m counter\n"
        'm_total{a="x y",b="q\\"uote",c="back\\\\slash",d="new\\nline"} 12 1700000000.5\n'
        'm_total{a="z"} 3.5e2 # {trace_id="abc"} 1\n'
        "n NaN\nn2 -Inf\n# EOF\nafter 1\n"
    )
    p = parse(text, cache, where="om")
    assert seen[0] == ("m_total", {"a": "x y", "b": 'q"uote', "c": "back\\slash", "d": "new\nline"})
    assert cache.types == {"m": "counter"}
    assert p.value[0] == 12 and p.timestamp[0] == 1700000000.5  # OpenMetrics: seconds
    assert p.value[1] == 350 and np.isnan(p.timestamp[1])
    assert np.isnan(p.value[2]) and p.value[3] == -np.inf and len(p) == 4  # nothing after # EOF
    p2 = parse('m_total{a="z"} 7 1700000000000\n', cache, where="prom", openmetrics=False)
    assert p2.timestamp[0] == 1700000000.0 and p2.slot[0] == 1  # Prometheus text: milliseconds
    assert len(seen) == 4  # cached keys are never parsed again


def test_parser_counts_garbage_and_refuses_past_the_fraction() -> None:
    cache, _ = _recorder()
    good = [f'g{{i="{i}"}} {i}' for i in range(8)]
    text = "\n".join([*good[:4], "this is { not a metric", '{"json": true}', *good[4:]]) + "\n"
    p = parse(text, cache, where="http://h/metrics", max_malformed_fraction=0.25)
    assert len(p) == 8 and p.malformed == 2 and [i.line for i in p.issues] == [5, 6]
    with pytest.raises(ExpositionError, match=r"http://h/metrics:1: 3 of 3 sample lines malformed"):
        parse("<html>\n<body>oops</body>\n</html>\n", cache, where="http://h/metrics")

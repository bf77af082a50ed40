"""DCGM mapping, exposition parsing and per-series resolution: labels, sentinels, counters, XIDs."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from seamguard.errors import InputError
from seamguard.model.catalog import SignalKind, signal_catalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.dcgm import DcgmTarget, ScrapeTarget
from seamguard.telemetry.sources.dcgm_config import DcgmSourceConfig, HostnameRule
from seamguard.telemetry.sources.dcgm_mapping import Role, dcgm_mapping, parse_mapping
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
        "DCGM_EXP_XID_ERRORS_COUNT": "gpu.xid", "DCGM_FI_DEV_XID_ERRORS": "gpu.xid",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": "gpu.row_remap_failure",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "gpu.remapped_rows_uncorrectable_total",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "gpu.remapped_rows_correctable_total",
    }  # fmt: skip
    assert {k: m[k].signal for k in want} == want
    assert CAT["gpu.ecc_sbe_total"].kind is SignalKind.COUNTER
    assert not m["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"].default and m["DCGM_FI_DEV_GPU_TEMP"].default
    assert m["DCGM_EXP_XID_ERRORS_COUNT"].role is Role.XID_WINDOW
    assert (
        m["DCGM_FI_DEV_FB_USED"].instance_signal == "mig.fb_used_mib"
        and not m["DCGM_FI_DEV_GPU_TEMP"].instance_signal
    )
    # every signal the twin's exporter renders has exactly one rendered non-event field
    for sig, fields in dcgm_mapping().rendered().items():
        assert len(fields) == (2 if sig == "gpu.xid" else 1)


def test_mapping_errors_name_the_field() -> None:
    with pytest.raises(InputError, match=r"fields.X: unknown signal 'gpu.nope'"):
        parse_mapping({"fields": {"X": {"signal": "gpu.nope"}}}, "m.yaml")
    with pytest.raises(InputError, match="role sum needs a counter"):
        parse_mapping({"fields": {"X": {"signal": "gpu.temp_c", "role": "sum"}}}, "m.yaml")
    with pytest.raises(InputError, match=r"fields.X: unknown key\(s\) instance"):
        parse_mapping({"fields": {"X": {"signal": "gpu.temp_c", "instance": "mig.fb_used_mib"}}}, "m.yaml")
    with pytest.raises(InputError, match=r"'gpu\.power_w' is not a mig"):
        parse_mapping({"fields": {"X": {"signal": "gpu.temp_c", "instance_signal": "gpu.power_w"}}}, "m.yaml")
    with pytest.raises(InputError, match="X is also mapped"):
        parse_mapping({"fields": {"X": {"signal": "gpu.temp_c"}}, "known_unmapped": ["X"]}, "m.yaml")


def test_values_labels_case_and_hostname_rule(topology: Topology) -> None:
    cfg = DcgmSourceConfig(
        hostname=HostnameRule(strip_suffixes=(".cluster.local",)), one_node_per_target=False
    )
    t = DcgmTarget(topology, cfg)
    batch, tally = scrape(t, [
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).",
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
        line("DCGM_FI_DEV_GPU_TEMP", "n01.cluster.local", 2, 71),
        'DCGM_FI_DEV_POWER_USAGE{gpu="3",hostname="n02",modelName="NVIDIA H100 80GB HBM3"} 512.25',
        line("DCGM_FI_DEV_NOT_A_FIELD", "n01", 0, 1000),
        line("DCGM_FI_DEV_ENC_UTIL", "n01", 0, 3),  # known and deliberately unread: no count, no notice
    ])  # fmt: skip
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n01/2": 71.0}
    assert values(batch, topology, "gpu.power_w") == {"gpu/n02/3": 512.25}
    assert tally.unknown == {"DCGM_FI_DEV_NOT_A_FIELD": 1}  # type: ignore[attr-defined]
    assert not tally.rejected  # type: ignore[attr-defined]


def test_uuid_override_and_endpoint_node(topology: Topology) -> None:
    cfg = DcgmSourceConfig(uuid_entities={"GPU-abc": "gpu/n05/1"})
    t = DcgmTarget(topology, cfg, target=ScrapeTarget("http://10.0.0.4:9400/metrics", "n04"))
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
    assert "label Hostname 'n99'" in why
    assert (
        "no node of the inventory named for a series without an instance label: target absent; label Hostname absent"
        in why
    )
    notes = [str(n) for n in tally.notices("dcgm", "http://h:9400/metrics")]
    assert any("1 series skipped: label gpu='abc'" in n and "(e.g. DCGM_FI_DEV_GPU_TEMP{" in n for n in notes)


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
    g = topology.local[topology.lookup("gpu/n01/0")]
    rates = []
    for now, (flit, data, sbe) in zip((10.0, 20.0, 30.0, 40.0), ((3, 4, 100), (5, 4, 110), (5, 6, 2), (5, 6, 5)),
                                      strict=True):  # fmt: skip
        batch, _ = scrape(t, [
            line("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "n01", 0, flit),
            line("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "n01", 0, data),
            line("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "n01", 0, sbe),  # 110 -> 2: a driver reload
        ], now)  # fmt: skip
        totals.append(values(batch, topology, "gpu.nvlink_errors_total")["gpu/n01/0"])
        store.ingest(now, batch)
        rates.append(float(store.rate("gpu.ecc_sbe_total")[g]))
    assert totals == [7.0, 9.0, 11.0, 11.0]
    # the reload's sample has no rate (never negative, never the 2 guessed as an increase); the
    # next is measured from the value after the reset
    assert rates[1] == pytest.approx(1.0) and np.isnan(rates[2]) and rates[3] == pytest.approx(0.3)


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


def xid_events(topo: Topology, batch: TelemetryBatch) -> list[tuple[str, int]]:
    pick = batch.signal == CAT["gpu.xid"].index
    return sorted((topo.ids[e], int(v)) for e, v in zip(batch.entity[pick], batch.value[pick], strict=True))


def count_line(host: str, gpu: int, code: int | None, n: int, window_ms: int = 300000, **extra: str) -> str:
    labels = {
        "window_size_in_ms": str(window_ms),
        **({"xid": str(code)} if code is not None else {}),
        **extra,
    }
    return line("DCGM_EXP_XID_ERRORS_COUNT", host, gpu, n, **labels)


def test_xid_window_rise_is_an_event_expiry_is_not_and_the_gauge_waits_its_turn(topology: Topology) -> None:
    """The windowed count is read like dcgm-exporter publishes it: a rise is news, a fall is the
    window's expiry, the first read only a baseline; the last-value gauge speaks only for GPUs
    without the count (a repeat of one code is invisible in it)."""
    t = DcgmTarget(topology, DcgmSourceConfig())

    def poll(now: float, *lines: str) -> list[tuple[str, int]]:
        batch, _ = scrape(t, list(lines), now)
        return xid_events(topology, batch)

    assert poll(100.0, count_line("n00", 0, 79, 1), line("DCGM_FI_DEV_XID_ERRORS", "n00", 1, 13)) == []
    assert poll(130.0, count_line("n00", 0, 79, 1), line("DCGM_FI_DEV_XID_ERRORS", "n00", 0, 48),
                line("DCGM_FI_DEV_XID_ERRORS", "n00", 1, 43)) == [("gpu/n00/1", 43)]  # fmt: skip
    assert poll(160.0, count_line("n00", 0, 79, 2), count_line("n00", 0, 48, 1),
                line("DCGM_FI_DEV_XID_ERRORS", "n00", 1, 43)) == [("gpu/n00/0", 48), ("gpu/n00/0", 79)]  # fmt: skip
    assert poll(190.0, count_line("n00", 0, 79, 1), count_line("n00", 0, 48, 1)) == []  # one 79 left
    assert poll(520.0, count_line("n00", 0, None, 0)) == []  # all expired: no event, no recovery
    assert poll(550.0, count_line("n00", 0, 79, 1)) == [("gpu/n00/0", 79)]


def test_a_flat_count_is_a_new_event_once_the_old_record_must_have_left(topology: Topology) -> None:
    """XID 79 at 100 s, another one just as the first leaves the 60 s window: the count stays 1.
    Read after the first record must be gone (window + 60 s slack for the exporter's collect
    interval and clock skew), the 1 is the second record. Before that, nothing is invented."""
    t = DcgmTarget(topology, DcgmSourceConfig())

    def poll(now: float, n: int) -> list[tuple[str, int]]:
        batch, _ = scrape(
            t, [count_line("n00", 2, 79, n, window_ms=60000) if n else count_line("n00", 2, None, 0)], now
        )
        return xid_events(topology, batch)

    assert poll(70.0, 0) == []
    assert poll(100.0, 1) == [("gpu/n00/2", 79)]
    assert [poll(now, 1) for now in (130.0, 160.0, 190.0, 219.0)] == [
        [],
        [],
        [],
        [],
    ]  # may be the same record
    assert poll(220.0, 1) == [("gpu/n00/2", 79)]  # 100 + 60 + 60: the first is surely gone


def test_the_window_comes_from_the_series_label_or_the_config(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig(xid_window_s=30.0))
    dcgm_line = line("DCGM_EXP_XID_ERRORS_COUNT", "n01", 0, 1, xid="74")  # no window_size_in_ms label
    scrape(t, [line("DCGM_EXP_XID_ERRORS_COUNT", "n01", 0, 0)], 0.0)
    assert xid_events(topology, scrape(t, [dcgm_line], 10.0)[0]) == [("gpu/n01/0", 74)]
    assert xid_events(topology, scrape(t, [dcgm_line], 50.0)[0]) == []  # 10 + 30 + 60 > 50
    assert xid_events(topology, scrape(t, [dcgm_line], 110.0)[0]) == [("gpu/n01/0", 74)]


def test_first_read_of_a_gpu_is_its_baseline_and_codes_outside_the_catalog_are_noticed(
    topology: Topology,
) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    assert xid_events(topology, scrape(t, [count_line("n03", 1, 79, 2)], 100.0)[0]) == []
    batch, tally = scrape(t, [count_line("n03", 1, 79, 3), count_line("n03", 1, 231, 1)], 130.0)
    assert xid_events(topology, batch) == [("gpu/n03/1", 79), ("gpu/n03/1", 231)]
    notes = [n.message for n in tally.notices("dcgm", "x")]  # type: ignore[attr-defined]
    assert any(n.startswith("on gpu/n03/1: XID 231 is not in NVIDIA's Xid catalog") for n in notes)
    assert not any("XID 79" in n for n in notes)


def test_xid_label_that_is_not_a_code_is_rejected(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    _, tally = scrape(t, [line("DCGM_EXP_XID_ERRORS_COUNT", "n00", 0, 1, xid="oops")])
    assert any("label xid='oops' is not an XID code" in k for k in tally.rejected)  # type: ignore[attr-defined]


# ---- where a series' node comes from ------------------------------------------------------------
def test_node_from_tries_each_place_in_order_and_the_first_inventory_node_wins(topology: Topology) -> None:
    pod = 'DCGM_FI_DEV_GPU_TEMP{gpu="1",Hostname="nvidia-dcgm-exporter-x7k2p",kubernetes_node="n03"} 50'
    # the default: the target (the URL names no node here), then the Hostname label (a pod name)
    t = DcgmTarget(
        topology, DcgmSourceConfig(), target=ScrapeTarget("http://10.42.3.17:9400/metrics", "10.42.3.17")
    )
    batch, tally = scrape(t, [pod, pod.replace('gpu="1"', 'gpu="2"')])
    assert len(batch) == 0
    assert dict(tally.rejected) == {  # type: ignore[attr-defined]
        "no node of the inventory named for http://10.42.3.17:9400/metrics: target '10.42.3.17'; "
        "label Hostname 'nvidia-dcgm-exporter-x7k2p'": 2
    }
    notes = tally.notices("dcgm", "1 endpoint(s)")  # type: ignore[attr-defined]
    assert len(notes) == 1 and notes[0].message.startswith("2 series skipped")  # one per target, not per GPU
    cfg = DcgmSourceConfig(node_from=("target", "Hostname", "kubernetes_node"))
    t = DcgmTarget(topology, cfg, target=ScrapeTarget("http://10.42.3.17:9400/metrics", "10.42.3.17"))
    assert values(scrape(t, [pod])[0], topology, "gpu.temp_c") == {"gpu/n03/1": 50.0}
    # the target names the node: it wins over a Hostname that names another one
    t = DcgmTarget(topology, DcgmSourceConfig(), target=ScrapeTarget("http://n05:9400/metrics", "n05"))
    assert values(scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "n04", 0, 40)])[0], topology, "gpu.temp_c") == {
        "gpu/n05/0": 40.0
    }
    # ...unless the config puts the label first
    t = DcgmTarget(topology, DcgmSourceConfig(node_from=("Hostname", "target")),
                   target=ScrapeTarget("http://n05:9400/metrics", "n05"))  # fmt: skip
    assert values(scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "n04", 0, 40)])[0], topology, "gpu.temp_c") == {
        "gpu/n04/0": 40.0
    }


def test_node_from_is_checked_at_load() -> None:
    with pytest.raises(ValidationError, match="'host name' is neither 'target' nor a label name"):
        DcgmSourceConfig(node_from=("target", "host name"))
    with pytest.raises(ValidationError, match="'hostname' listed twice"):
        DcgmSourceConfig(node_from=("Hostname", "hostname"))
    with pytest.raises(ValidationError, match="at least one place"):
        DcgmSourceConfig(node_from=())
    assert DcgmSourceConfig(endpoints=("http://n07.dc:9400/metrics",)).endpoints[0].target_host() == "n07.dc"


# ---- MIG ------------------------------------------------------------------------------------------
def mig_topology() -> Topology:
    from seamguard.model.inventory import Inventory, NodeRecord, parse_mig_layout
    from seamguard.model.topology import build_topology

    nodes = (
        NodeRecord("m0", "r0", "c0", "l0", 4, mig=parse_mig_layout("0:7-10|1:1;2", 4)),
        NodeRecord("m1", "r0", "c0", "l0", 4),
    )
    return build_topology(Inventory(nodes))


def mig_line(field: str, gpu: int, inst: tuple[int, str] | None, value: object, **extra: str) -> str:
    labels = {"gpu": str(gpu), "UUID": f"GPU-m0-{gpu}", **({"GPU_I_PROFILE": inst[1], "GPU_I_ID": str(inst[0])} if inst else {}),
              "Hostname": "m0", **extra}  # fmt: skip
    return f"{field}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in labels.items())}}} {value}"


def test_mig_instances_get_their_own_fields_and_gpu_fields_are_read_once() -> None:
    topo = mig_topology()
    t = DcgmTarget(topo, DcgmSourceConfig())
    insts = [(7, "1g.10gb"), (8, "1g.10gb"), (9, "1g.10gb"), (10, "1g.10gb")]
    lines = [mig_line("DCGM_FI_DEV_GPU_TEMP", 0, i, 44) for i in insts]
    lines += [mig_line("DCGM_FI_DEV_FB_USED", 0, i, 100 * i[0]) for i in insts]
    lines += [mig_line(f, 0, i, 3) for i in insts for f in ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
                                                            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL")]  # fmt: skip
    lines += [mig_line("DCGM_EXP_XID_ERRORS_COUNT", 0, i, 0, window_size_in_ms="300000") for i in insts]
    batch, tally = scrape(t, lines, 100.0)
    assert not tally.rejected  # type: ignore[attr-defined]
    assert values(batch, topo, "gpu.temp_c") == {"gpu/m0/0": 44.0}
    assert int(np.count_nonzero(batch.signal == CAT["gpu.temp_c"].index)) == 1  # one sample, not four
    assert values(batch, topo, "mig.fb_used_mib") == {f"gpu/m0/0/mig/{i}": 100.0 * i for i in (7, 8, 9, 10)}
    assert values(batch, topo, "gpu.nvlink_errors_total") == {"gpu/m0/0": 6.0}  # not 24: one sum per GPU
    # one XID on a GPU of four instances, repeated on each instance's series: one event
    batch, _ = scrape(t, [mig_line("DCGM_EXP_XID_ERRORS_COUNT", 0, i, 1, window_size_in_ms="300000", xid="94")
                          for i in insts], 130.0)  # fmt: skip
    assert xid_events(topo, batch) == [("gpu/m0/0", 94)]


def test_a_whole_gpu_series_wins_over_its_instance_copies_and_unknown_instances_are_named() -> None:
    topo = mig_topology()
    t = DcgmTarget(topo, DcgmSourceConfig())
    batch, tally = scrape(t, [
        mig_line("DCGM_FI_DEV_GPU_TEMP", 1, (1, "3g.40gb"), 61),
        mig_line("DCGM_FI_DEV_GPU_TEMP", 1, None, 60),
        mig_line("DCGM_FI_DEV_FB_USED", 1, (3, "1g.10gb"), 5),  # instance 3 is not in the inventory
        mig_line("DCGM_FI_DEV_FB_USED", 0, (7, "1g.10gb"), 5, GPU_I_ID="x"),
    ])  # fmt: skip
    assert values(batch, topo, "gpu.temp_c") == {"gpu/m0/1": 60.0}
    why = " | ".join(tally.rejected)  # type: ignore[attr-defined]
    assert "a MIG instance the inventory does not list" in why
    assert "label GPU_I_ID='x' is not a GPU instance id" in why


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


def test_huge_numbers_and_long_labels_are_refused_and_quoted_short(topology: Topology) -> None:
    """A label of 5,000 digits would make int() raise (Python's 4,300-digit limit): refused like
    any non-index, and a notice quotes a long label value cut short."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    huge = "9" * 5000
    batch, tally = scrape(t, [
        line("DCGM_FI_DEV_GPU_TEMP", "n00", huge, 50),
        line("DCGM_EXP_XID_ERRORS_COUNT", "n00", 0, 1, xid=huge),
        line("DCGM_FI_DEV_FB_USED", "n00", 0, 1, GPU_I_ID=huge),
        line("DCGM_FI_DEV_GPU_TEMP", "x" * 10_000, 1, 50),
    ])  # fmt: skip
    assert len(batch) == 0
    assert len(tally.rejected) == 4  # type: ignore[attr-defined]
    for n in tally.notices("dcgm", "x"):  # type: ignore[attr-defined]
        assert len(n.message) < 600, n.message[:200]


def test_series_read_or_not_all_count_toward_the_malformed_share(topology: Topology) -> None:
    """Two bad lines among 104 good ones are 2 %, not "2 of 6" because 100 of the good lines are
    of a field seamguard does not read; on the warm path too."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    lines = [line("DCGM_FI_DEV_FAN_SPEED", "n00", g % 4, 50, x=str(g)) for g in range(100)]
    lines += [line("DCGM_FI_DEV_GPU_TEMP", "n00", g, 50) for g in range(4)]
    lines += ['DCGM_FI_DEV_GPU_TEMP{gpu="0" bad 1'] * 2
    for _ in range(2):
        p = parse("\n".join(lines) + "\n", t.cache, where="x", max_malformed_fraction=0.2)
        assert (len(p), p.lines, p.malformed) == (4, 106, 2)


def test_a_cache_of_churned_keys_is_emptied_not_kept_forever(topology: Topology) -> None:
    """Kubernetes pod labels change with every job: each scrape brings new keys. The cache is
    emptied once it holds four times what a scrape needs, and the values still arrive."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    sizes = []
    for job in range(40):
        text = "\n".join(line("DCGM_FI_DEV_GPU_TEMP", "n00", g, 50 + job, pod=f"job-{job}") for g in range(4))
        text += "\n" + "\n".join(
            f'DCGM_FI_DEV_FAN_SPEED{{gpu="{g}",pod="job-{job}-{k}"}} 1' for g in range(4) for k in range(300)
        )
        batch, _ = scrape(t, [text], 100.0 + job)
        assert values(batch, topology, "gpu.temp_c")["gpu/n00/3"] == 50.0 + job
        sizes.append(len(t.cache.keys))
    assert max(sizes) <= 4 * 4096 + 1204  # forgotten past four times a poll (at least 4,096)
    assert sizes[-1] < max(sizes)
    assert t.table.n_slots < 4 * 40  # the slots of forgotten keys went with them


# ---- the review's cases: what must never count an XID twice, raise, or speak for another node ----
def test_a_code_missing_from_one_read_is_not_an_expiry(topology: Topology) -> None:
    """XID 48's line is NaN (or malformed) for one read while 63 of the same GPU is read: that is
    not the window emptying, so 48 reappearing is the same record, not a second event."""
    t = DcgmTarget(topology, DcgmSourceConfig())

    def poll(now: float, n48: object) -> list[tuple[str, int]]:
        return xid_events(
            topology, scrape(t, [count_line("n00", 0, 48, n48), count_line("n00", 0, 63, 1)], now)[0]
        )  # type: ignore[arg-type]

    scrape(t, [count_line("n00", 0, None, 0)], 100.0)
    assert poll(130.0, 1) == [("gpu/n00/0", 48), ("gpu/n00/0", 63)]
    assert poll(370.0, "NaN") == []  # by now the record of (100, 130] could have left...
    assert poll(400.0, 1) == []  # ...but was not seen leaving: the 1 is still that record


def test_a_fall_releases_only_records_that_could_have_left(topology: Topology) -> None:
    """At 160 s the count of 79 drops from 2 to 1 and rises back to 2 at 190 s: records of 130 s
    cannot have left a 300 s window yet, so the drop is a glitch (an exporter restart, a second
    exporter) and the 2 is no news."""
    t = DcgmTarget(topology, DcgmSourceConfig())
    scrape(t, [count_line("n01", 0, None, 0)], 100.0)
    assert xid_events(topology, scrape(t, [count_line("n01", 0, 79, 2)], 130.0)[0]) == [("gpu/n01/0", 79)] * 2
    assert xid_events(topology, scrape(t, [count_line("n01", 0, 79, 1)], 160.0)[0]) == []
    assert xid_events(topology, scrape(t, [count_line("n01", 0, 79, 2)], 190.0)[0]) == []


def test_a_huge_count_is_held_in_groups_not_one_entry_per_record(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    scrape(t, [count_line("n02", 1, None, 0)], 100.0)
    batch, _ = scrape(t, [count_line("n02", 1, 79, "4e18")], 130.0)  # below the 2^62 sentinel line
    assert xid_events(topology, batch) == [("gpu/n02/1", 79)] * 8  # at most 8 rows per read
    held = t.table.xids.held[topology.index["gpu/n02/1"]][79]
    assert len(held) == 1 and held[0][2] == 1_000_000


def totals_line(host: str, gpu: int, code: int, n: object) -> str:
    return line("DCGM_EXP_XID_ERRORS_TOTAL", host, gpu, n, xid=str(code))


def test_the_cumulative_total_counts_rises_and_restarts(topology: Topology) -> None:
    """DCGM_EXP_XID_ERRORS_TOTAL (exporter 4.8.3+): a series that appears on a GPU already read is
    news; a rise is as many events; a fall is the exporter's restart, counting anew."""
    t = DcgmTarget(topology, DcgmSourceConfig())

    def poll(now: float, *lines: str) -> list[tuple[str, int]]:
        return xid_events(topology, scrape(t, list(lines), now)[0])

    assert (
        poll(100.0, totals_line("n03", 0, 13, 4), line("DCGM_FI_DEV_GPU_TEMP", "n03", 1, 50)) == []
    )  # history
    assert poll(130.0, totals_line("n03", 0, 13, 4), totals_line("n03", 1, 79, 1)) == [("gpu/n03/1", 79)]
    assert poll(160.0, totals_line("n03", 0, 13, 6), totals_line("n03", 1, 79, 1)) == [("gpu/n03/0", 13)] * 2
    assert poll(190.0, totals_line("n03", 0, 13, 1)) == [("gpu/n03/0", 13)]  # restarted, one since


def test_one_xid_seen_by_the_total_the_window_and_the_gauge_is_one_event(topology: Topology) -> None:
    """The three ways report one XID, in different reads (the window lags a collect): one event;
    the gauge also speaks when the count series are gone from a read."""
    t = DcgmTarget(topology, DcgmSourceConfig())

    def poll(now: float, *lines: str) -> list[tuple[str, int]]:
        return xid_events(topology, scrape(t, list(lines), now)[0])

    gauge = line("DCGM_FI_DEV_XID_ERRORS", "n04", 2, 0)
    assert poll(100.0, count_line("n04", 2, None, 0), gauge) == []
    assert poll(130.0, totals_line("n04", 2, 48, 1), count_line("n04", 2, None, 0), gauge) == [
        ("gpu/n04/2", 48)
    ]
    assert (
        poll(160.0, totals_line("n04", 2, 48, 1), count_line("n04", 2, 48, 1), gauge.replace(" 0", " 48"))
        == []
    )
    # the count collector disabled (exporter reconfigured): the gauge still reports a new code
    assert poll(190.0, line("DCGM_FI_DEV_XID_ERRORS", "n04", 2, 79)) == [("gpu/n04/2", 79)]


def test_the_hostname_rule_is_for_names_not_addresses_or_nodes_the_config_names() -> None:
    from seamguard.model.inventory import Inventory, NodeRecord
    from seamguard.model.topology import build_topology

    topo = build_topology(Inventory(tuple(NodeRecord(f"n{i}", "r0", "c0", "l0", 2) for i in range(1, 40))))
    cfg = DcgmSourceConfig(hostname=HostnameRule(strip_domain=True, prefix="n"))
    # an IP target is not n10; the exporter's Hostname 17.cluster is n17
    t = DcgmTarget(topo, cfg, target=ScrapeTarget("http://10.0.0.17:9400/metrics", "10.0.0.17"))
    assert values(scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "17.cluster", 0, 50)])[0], topo, "gpu.temp_c") == {
        "gpu/n17/0": 50.0
    }
    # a node the config names is taken as written (not nn17)
    t = DcgmTarget(topo, cfg, target=ScrapeTarget("http://x:9400/metrics", "n17", named=True))
    assert values(scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "pod-abc", 0, 51)])[0], topo, "gpu.temp_c") == {
        "gpu/n17/0": 51.0
    }
    # through Prometheus, an instance that is a pod's address is not a node either
    t = DcgmTarget(topo, cfg)
    got = scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "21", 1, 52, instance="10.244.3.17:9400")])[0]
    assert values(got, topo, "gpu.temp_c") == {"gpu/n21/1": 52.0}


def test_one_exporter_speaks_for_one_node(topology: Topology) -> None:
    """An exporter on an address names its node by its Hostname label; a series of it naming
    another node (a compromised or misconfigured exporter) is refused, with a notice."""
    t = DcgmTarget(
        topology, DcgmSourceConfig(), target=ScrapeTarget("http://10.0.0.5:9400/metrics", "10.0.0.5")
    )
    batch, tally = scrape(
        t,
        [
            line("DCGM_FI_DEV_GPU_TEMP", "n05", 0, 50),
            line("DCGM_EXP_XID_ERRORS_COUNT", "n01", 0, 1, xid="79"),
        ],
    )
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n05/0": 50.0} and xid_events(topology, batch) == []
    assert list(tally.rejected) == [  # type: ignore[attr-defined]
        "http://10.0.0.5:9400/metrics speaks for node n05; a series of it naming node n01 is refused (one_node_per_target)"
    ]


def test_samples_stamped_ahead_are_read_at_the_poll_and_noticed(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig())
    parsed = parse(line("DCGM_FI_DEV_GPU_TEMP", "n00", 0, 50) + " 99999999999999\n", t.cache, where="x")
    batch, tally = t.convert(parsed.slot, parsed.value, parsed.timestamp, 1000.0)
    assert batch.timestamp.tolist() == [1000.0]
    assert any("1 samples stamped more than 60 s ahead" in n.message for n in tally.notices("dcgm", "x"))  # type: ignore[attr-defined]


def test_label_sets_from_json_never_share_a_key(topology: Topology) -> None:
    """{a: "1,gpu=3"} and {a: "1", gpu: "3"} joined as text were one key: the real GPU 3 series
    was cached to the first one's rejected slot."""
    t = DcgmTarget(topology, DcgmSourceConfig(), target=ScrapeTarget("http://n00:9400/metrics", "n00"))
    assert t.slot_for("DCGM_FI_DEV_GPU_TEMP", {"a": "1,gpu=3"}) != t.slot_for(
        "DCGM_FI_DEV_GPU_TEMP", {"a": "1", "gpu": "3"}
    )


def test_reasons_beyond_eight_are_summed_in_one_notice(topology: Topology) -> None:
    t = DcgmTarget(topology, DcgmSourceConfig(one_node_per_target=False))
    _, tally = scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", f"x{i}", 0, 50) for i in range(20)])
    notes = [n.message for n in tally.notices("dcgm", "x")]  # type: ignore[attr-defined]
    assert (
        len(notes) == 9
        and notes[-1] == "12 more series skipped for 12 more reasons (the 8 commonest are named)"
    )


def test_a_label_that_is_not_text_skips_its_series_only(topology: Topology) -> None:
    """Through Prometheus's JSON a label value could be a number or a list: that series is skipped
    with a reason; the others of the same answer still arrive."""
    t = DcgmTarget(topology, DcgmSourceConfig(), target=ScrapeTarget("http://n00:9400/metrics", "n00"))
    bad = t.slot_for("DCGM_FI_DEV_GPU_TEMP", {"gpu": 0})  # type: ignore[dict-item]
    good = t.slot_for("DCGM_FI_DEV_GPU_TEMP", {"gpu": "1"})
    batch, tally = t.convert(np.array([bad, good]), np.array([50.0, 51.0]), np.full(2, np.nan), 10.0)
    assert values(batch, topology, "gpu.temp_c") == {"gpu/n00/1": 51.0}
    assert list(tally.rejected) == ["a label whose name or value is not text (a malformed answer)"]


def test_forgetting_churned_keys_does_not_free_an_exporter_to_name_another_node(topology: Topology) -> None:
    t = DcgmTarget(
        topology, DcgmSourceConfig(), target=ScrapeTarget("http://10.0.0.5:9400/metrics", "10.0.0.5")
    )
    scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "n05", 0, 50)])
    churn = [f'DCGM_FI_DEV_FAN_SPEED{{gpu="0",pod="p{k}"}} 1' for k in range(17_000)]
    scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "n05", 0, 50), *churn])
    assert len(t.cache.keys) == 0  # forgotten
    batch, tally = scrape(t, [line("DCGM_FI_DEV_GPU_TEMP", "n01", 0, 50)])
    assert len(batch) == 0 and "speaks for node n05" in " ".join(tally.rejected)  # type: ignore[attr-defined]

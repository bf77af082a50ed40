"""The console in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
installed by ``make test``; never a downloaded browser) against a daemon fed by the twin
(``tests/console_harness.py``).

A degrading rack turns degraded and then quarantine on the page within one tick of the engine's
transition; an operator approves a waiting drain and the cluster's webhook receives it; a viewer
sees no control and the API refuses one forged from its page; a node pinned healthy from the
console is left alone. Screenshots go to ``$SEAMGUARD_SCREENSHOTS`` (default
``build/screenshots``) for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.components import unavailable
from tests.console_harness import (
    DRAINED_AT,
    RACK_DEGRADED_AT,
    RACK_QUARANTINED_AT,
    ConsoleDaemon,
    Hook,
    console_daemon,
)

CHROMIUM = Path("/usr/bin/chromium")
# What the machine's closed network needs (no background fetches, no QUIC); see docs/testing.md.
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = Path(os.environ.get("SEAMGUARD_SCREENSHOTS", "build/screenshots"))
LIVE_S = 5_000  # ms a live update may take to reach the page (the engine's next tick is the bound)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Debian's chromium is not installed (scripts/system_packages.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def cd(tmp_path: Path) -> Iterator[ConsoleDaemon]:
    with console_daemon(tmp_path) as d:
        yield d


def signed_in(browser: Any, cd: ConsoleDaemon, who: str) -> Any:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(cd.url + "/console")
    page.fill("#token", cd.tokens[who])
    page.click("#login-form button")
    page.wait_for_selector("#fleet[data-version]")
    return page


def shown_version(page: Any, cd: ConsoleDaemon) -> None:
    """Until the page shows the daemon's newest fleet (its live stream brought it)."""
    page.wait_for_selector(f'#fleet[data-version="{cd.daemon.version}"]', timeout=LIVE_S)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_degrading_rack_turns_degraded_then_quarantine_within_one_tick(
    browser: Any, cd: ConsoleDaemon
) -> None:
    page = signed_in(browser, cd, "viewer")
    cd.step_to(RACK_DEGRADED_AT - 3)
    seen: list[str] = []
    for _ in range(RACK_DEGRADED_AT - 3, RACK_QUARANTINED_AT + 2):
        cd.step()
        shown_version(page, cd)  # the page caught up with this tick before the next one runs
        on_page = page.get_attribute('.tile[data-entity="rack/r002"]', "data-state")
        assert on_page == cd.rack_state("rack/r002")
        if not seen or seen[-1] != on_page:
            seen.append(on_page)
    assert seen == ["healthy", "degraded", "quarantine"], seen
    glyph = page.inner_text('.tile[data-entity="rack/r002"]')
    assert glyph.startswith("⊘")  # told by a glyph too, not by colour alone
    page.click('.tile[data-entity="rack/r002"]')
    page.wait_for_selector('#drill[data-entity="rack/r002"]')
    assert "quarantine" in page.inner_text("#drill-title")
    shot(page, "console-rack-quarantined")
    # the rack's page plots its scores and signals over the ticks around its transitions
    assert page.query_selector_all("#drill svg.chart")
    assert "rack.inlet_temp_c" in page.text_content("#drill svg.chart.signal")
    # its 16 GPUs run the synchronous job, whose other 32 would stop with them
    assert "Blast radius: if it failed, 48 GPUs stop (16 under it, 1 job(s) with a rank there: train)" in (
        page.inner_text("#drill .blast")
    )
    page.click('#drill a.entity[data-entity="node/n0009"]')
    page.wait_for_selector('#drill[data-entity="node/n0009"]')
    node = cd.daemon.fleet.children("node/n0009")
    assert node is not None
    hot = next(c["id"] for c in node["children"] if c["state"] == "quarantine")  # type: ignore[attr-defined]
    page.click(f'#drill a.entity[data-entity="{hot}"]')
    page.wait_for_selector(f'#drill[data-entity="{hot}"] svg.chart.signal')
    assert "gpu.temp_c" in page.text_content("#drill") and "Next steps for a person" in page.inner_text(
        "#drill"
    )
    shot(page, "console-gpu-page")


def test_an_operator_approves_a_waiting_drain_and_it_is_carried_out(browser: Any, cd: ConsoleDaemon) -> None:
    page = signed_in(browser, cd, "operator")
    cd.step_to(DRAINED_AT)
    shown_version(page, cd)
    page.wait_for_selector('#awaiting li:has-text("drain_node node/n0001")')
    assert Hook.received == []  # nothing reaches the cluster before a person says so (nor the plan)
    job = page.inner_text('#jobs li[data-entity="job/train"]')
    assert "ETTR 0." in job and "rollback" in job and "suspect parts: node/n0001" in job, job
    assert "Budgets used: fleet 1/" in page.inner_text("#safety")
    shot(page, "console-awaiting-approval")
    # a locator, not an element handle: a live update may redraw the list between finding and clicking
    page.locator('#awaiting li:has-text("drain_node node/n0001") button.approve').click()
    page.wait_for_selector('#awaiting li:has-text("drain_node node/n0001")', state="detached", timeout=LIVE_S)
    assert [(b["kind"], b["target"]) for b in Hook.received] == [("drain_node", "node/n0001")]
    assert page.inner_text("#control-result").startswith("approved drain_node:node/n0001")
    with cd.journal() as j:
        [approval] = [r for r in j.operator_actions() if r.verb == "approve"]
    assert approval.principal == "operator"
    # the job's failure mode, what it costs and the healthy time its hot GPU holds back
    cd.step_to(DRAINED_AT + 3)
    said = '#jobs li[data-entity="job/train"] .diagnosis:has-text("failure mode: thermal_power")'
    page.wait_for_selector(said, timeout=LIVE_S)
    assert re.search(r"holds back \d+\.\d healthy GPU-s/s", page.inner_text(said)), page.inner_text(said)


def test_a_viewer_sees_no_control_and_the_api_refuses_one(browser: Any, cd: ConsoleDaemon) -> None:
    page = signed_in(browser, cd, "viewer")
    cd.step_to(DRAINED_AT)
    shown_version(page, cd)
    page.wait_for_selector('#awaiting li:has-text("drain_node node/n0001")')
    assert page.query_selector("#awaiting button") is None and not page.is_visible("#control-form")
    status = page.evaluate(
        """async () => (await fetch('/v1/ops/pause', {method: 'POST', headers: {'Content-Type': 'application/json',
            Authorization: 'Bearer ' + sessionStorage.getItem('seamguard.token')},
            body: JSON.stringify({target: 'fleet', reason: 'a viewer tries', for_s: 600})})).status"""
    )
    with cd.journal() as j:
        assert status == 403 and j.operator_actions() == []


def test_a_node_pinned_healthy_from_the_console_is_left_alone(browser: Any, cd: ConsoleDaemon) -> None:
    page = signed_in(browser, cd, "operator")
    page.select_option("#c-verb", "pin")
    page.fill("#c-target", "node/n0001")
    page.select_option("#c-state", "healthy")
    page.fill("#c-reason", "benign sensor, vendor ticket 4711")
    page.click("#control-form button")
    page.wait_for_selector('#controls li[data-target="node/n0001"]', timeout=LIVE_S)
    cd.step_to(DRAINED_AT + 10)
    shown_version(page, cd)
    assert Hook.received == [] and page.query_selector('#awaiting li:has-text("node/n0001")') is None
    with cd.journal() as j:
        skipped = [r for r in j.action_results(target="node/n0001") if r.kind == "drain_node"]
    assert [(r.actuator, r.status) for r in skipped] == [("operator", "skipped")]
    assert "benign sensor" in skipped[0].detail and "operator" in skipped[0].detail
    shot(page, "console-pinned")


def test_an_operator_vouches_a_node_repaired_from_the_console(browser: Any, cd: ConsoleDaemon) -> None:
    page = signed_in(browser, cd, "operator")
    page.select_option("#c-verb", "repaired")
    assert not page.is_visible("#c-for")  # once, no expiry
    page.fill("#c-target", "node/n0002")
    page.fill("#c-reason", "GPU swapped, RMA 4411")
    page.click("#control-form button")
    page.wait_for_selector('#control-result:has-text("repaired node/n0002")', timeout=LIVE_S)
    with cd.journal() as j:
        last = j.operator_actions()[-1]
    assert (last.verb, last.target, last.reason) == ("repaired", "node/n0002", "GPU swapped, RMA 4411")


def test_markup_in_a_reason_is_shown_as_text_and_never_runs(browser: Any, cd: ConsoleDaemon) -> None:
    """An operator's reason is shown to every viewer: a stored-XSS attempt in it stays text (the
    script writes with textContent, and the policy forbids inline script anyway)."""
    attack = '<img src=x onerror="window.pwned=1">'
    operator = signed_in(browser, cd, "operator")
    operator.select_option("#c-verb", "maintenance")
    operator.fill("#c-target", "rack/r001")
    operator.fill("#c-reason", attack)
    operator.click("#control-form button")
    operator.wait_for_selector('#controls li[data-target="rack/r001"]', timeout=LIVE_S)
    viewer = signed_in(browser, cd, "viewer")
    viewer.wait_for_selector('#controls li[data-target="rack/r001"]', timeout=LIVE_S)
    assert attack in viewer.inner_text('#controls li[data-target="rack/r001"]')
    assert viewer.query_selector("#controls img") is None
    assert viewer.evaluate("() => window.pwned") is None and operator.evaluate("() => window.pwned") is None

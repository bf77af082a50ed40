"""The operator's API and the console's reads on a running ``seamguard run`` with a tokens file,
tried as a caller on the same network would: who may change what, bounded bodies, the console's
shell public and empty of data, the fleet rolled up to one state per entity, and the live stream."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from seamguard.journal.sqlite import SqliteJournal
from tests import test_security_attacks as attacks
from tests.test_security_attacks import VICTIM_NODE, LiveDaemon, forged_xid

# The running daemon of the attack tests, with its tokens file (viewer, pusher, operator, admin).
live, push_config, service_config = attacks.live, attacks.push_config, attacks.service_config

PAUSE = {"target": "fleet", "reason": "firmware rollout", "for_s": 3600}


def operator_rows(live: LiveDaemon) -> list[tuple[str, str, str]]:
    with SqliteJournal(live.journal_path, read_only=True) as j:
        return [(r.principal, r.verb, r.target) for r in j.operator_actions()]


@pytest.mark.parametrize(
    "path", ["/v1/fleet", "/v1/fleet/rack/r1", "/v1/entities/node/n02", "/v1/ops", "/v1/events", "/v1/whoami"]
)
def test_the_console_reads_need_a_token(live: LiveDaemon, path: str) -> None:
    resp = live.request("GET", path)
    assert resp.status_code == 401 and "needs a bearer token with role viewer" in resp.json()["detail"]


@pytest.mark.parametrize("who", [None, "viewer", "pusher"])
def test_only_an_operator_may_pause(live: LiveDaemon, who: str | None) -> None:
    resp = live.request("POST", "/v1/ops/pause", who, json=PAUSE)
    assert resp.status_code == (401 if who is None else 403), resp.text
    if who is not None:
        assert "needs operator" in resp.json()["detail"]
    live.wait_ticks(1)
    assert operator_rows(live) == [] and live.daemon.status().controls == ()


def test_an_operator_pause_is_journaled_under_its_token_name_and_holds(live: LiveDaemon) -> None:
    resp = live.request("POST", "/v1/ops/pause", "operator", json=PAUSE)
    assert resp.status_code == 200, resp.text
    assert resp.json()["record"]["by"] == "operator" and resp.json()["record"]["verb"] == "pause"
    assert operator_rows(live) == [("operator", "pause", "fleet")]
    listed = live.request("GET", "/v1/ops", "viewer").json()
    assert [(c["verb"], c["by"]) for c in listed["controls"]] == [("pause", "operator")]
    # A forged-looking but authentic XID now only advises: nothing reaches the cluster while paused.
    assert live.push(forged_xid(time.time()), "pusher").status_code == 202
    live.wait_ticks(2)
    with SqliteJournal(live.journal_path, read_only=True) as j:
        done = [(a.actuator, a.status) for a in j.action_results(target=VICTIM_NODE)]
    assert ("operator", "advised") in done and not any(a == "webhook" for a, _ in done)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"target": "fleet", "reason": "x" * 10, "for_s": 10}, 422, "for_s"),  # under a minute
        ({"target": "fleet", "reason": "rollout"}, 422, "for_s"),  # no expiry
        ({"target": "fleet", "reason": "no"}, 422, "reason"),  # too short to say why
        ({"target": "<script>", "reason": "rollout", "for_s": 600}, 422, "target"),
        ({"target": "fleet", "reason": "r" * 5000, "for_s": 600}, 413, "4096"),
        ({"target": "fleet", "reason": "rollout", "for_s": 600, "extra": 1}, 422, "extra"),
    ],
)
def test_a_bad_control_is_refused_naming_the_field(
    live: LiveDaemon, body: dict[str, object], status: int, says: str
) -> None:
    resp = live.request("POST", "/v1/ops/pause", "operator", json=body)
    assert resp.status_code == status and says in json.dumps(resp.json()), resp.text
    assert operator_rows(live) == []


@pytest.mark.parametrize(
    ("who", "body", "status", "says"),
    [
        (None, {"target": "node/n02", "reason": "GPU swapped"}, 401, "bearer token"),
        ("pusher", {"target": "node/n02", "reason": "GPU swapped"}, 403, "needs operator"),
        ("operator", {"target": "node/n02", "reason": "r" * 5000}, 413, "4096"),
        ("operator", {"target": "<script>", "reason": "GPU swapped"}, 422, "target"),
        ("operator", {"target": "fleet", "reason": "GPU swapped"}, 422, "one node"),
        ("operator", {"target": "rack/r1", "reason": "GPU swapped"}, 422, "one node"),
        ("operator", {"target": "node/n99", "reason": "GPU swapped"}, 404, "node/n99"),
    ],
)
def test_a_repair_claim_is_refused_unless_an_operator_names_one_known_node(
    live: LiveDaemon, who: str | None, body: dict[str, object], status: int, says: str
) -> None:
    """Vouching a node repaired releases it early: only an operator may, for one node that exists,
    and a refused claim is not journaled."""
    resp = live.request("POST", "/v1/ops/repaired", who, json=body)
    assert resp.status_code == status and says in json.dumps(resp.json()), resp.text
    assert operator_rows(live) == []


def test_an_unknown_control_and_an_unknown_entity_are_named(live: LiveDaemon) -> None:
    resp = live.request("POST", "/v1/ops/reboot", "operator", json=PAUSE)
    assert resp.status_code == 404 and "known: pause, resume" in resp.json()["detail"]
    resp = live.request("POST", "/v1/ops/pause", "operator", json={**PAUSE, "target": "rack/r99"})
    assert resp.status_code == 404 and "rack/r99" in resp.json()["detail"]


def test_the_console_shell_is_public_strict_and_carries_no_data(live: LiveDaemon) -> None:
    for path in ("/console", "/console/app.js", "/console/app.css"):
        resp = live.request("GET", path)
        assert resp.status_code == 200, path
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "n02" not in resp.text and "train" not in resp.text  # nothing of the fleet in the shell
    assert "<script>" not in live.request("GET", "/console").text.replace(
        '<script src="/console/app.js" defer></script>', ""
    )


def test_the_fleet_rolls_gpus_up_to_their_node(live: LiveDaemon) -> None:
    """A GPU that fell off the bus makes its node unwell in /v1/fleet, in the drill-down and on
    the entity page alike, as /v1/status holds the node out of service: one state everywhere."""
    assert live.push(forged_xid(time.time()), "pusher").status_code == 202
    live.wait_ticks(2)
    fleet = live.request("GET", "/v1/fleet", "viewer").json()
    assert fleet["status"]["quarantined"] == [VICTIM_NODE]
    rack = live.request("GET", "/v1/fleet/rack/r1", "viewer").json()
    [n02] = [c for c in rack["children"] if c["id"] == VICTIM_NODE]
    page = live.request("GET", f"/v1/entities/{VICTIM_NODE}", "viewer").json()
    assert n02["state"] == page["state"] != "healthy" and n02["held"] is True
    assert (page["blast"]["entity"], page["blast"]["gpus"]) == (VICTIM_NODE, 4)
    assert page["blast"]["takes_down_gpus"] >= 4 and page["blast"]["held_back_gpu_s_per_s"] == 0.0
    assert fleet["totals"]["held"] == 1 and sum(fleet["totals"]["nodes"].values()) == 8
    gpu = live.request("GET", "/v1/entities/gpu/n02/1", "viewer").json()
    assert gpu["state"] == "failed" and any(a["target"] == VICTIM_NODE for a in gpu["actions"])
    assert gpu["next_steps"][0].startswith("XID 79") and "NVIDIA's XID catalog" in gpu["next_steps"][0]


def test_the_live_stream_says_when_a_tick_lands(live: LiveDaemon) -> None:
    headers = {"Authorization": f"Bearer {live.tokens['viewer']}"}
    with httpx.stream("GET", live.url + "/v1/events", headers=headers, timeout=10, trust_env=False) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        versions: list[int] = []
        for line in resp.iter_lines():
            if line.startswith("data: "):
                versions.append(json.loads(line[6:])["version"])
            if len(versions) == 2:
                break
    assert versions[1] > versions[0]


def test_whoami_names_the_roles(live: LiveDaemon) -> None:
    assert live.request("GET", "/v1/whoami", "operator").json() == {"name": "operator", "roles": ["operator"]}


def test_the_api_is_documented_behind_viewer(live: LiveDaemon) -> None:
    assert live.request("GET", "/openapi.json").status_code == 401
    spec = live.request("GET", "/openapi.json", "viewer").json()
    for path in (
        "/v1/ops/{verb}",
        "/v1/fleet",
        "/v1/nodes",
        "/v1/entities/{entity}",
        "/v1/events",
        "/v1/whoami",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/ops/{verb}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"target", "reason", "for_s", "state"} <= set(body["properties"]) and body["required"] == [
        "reason"
    ]

"""The review API against the real SQLite store: reading, deciding, auditing, access."""

from __future__ import annotations

import pytest
from review_support import filled_store
from starlette.testclient import TestClient

from streamguard.quarantine.api import create_app


@pytest.fixture
def env(store_url):
    store = filled_store(store_url)
    client = TestClient(create_app(store))
    reviewer = {"Authorization": "Bearer " + store.add_token("rita", "reviewer")}
    admin = {"Authorization": "Bearer " + store.add_token("adam", "admin")}
    yield client, store, reviewer, admin
    store.close()


def test_queue_pages_filters_and_sorts(env):
    client, _, reviewer, _ = env
    page = client.get("/api/queue?page_size=7&sort=score", headers=reviewer).json()
    assert page["total"] == 40 and len(page["events"]) == 7
    scores = [e["score"] for e in page["events"]]
    assert scores == sorted(scores, reverse=True)
    anomaly = client.get("/api/queue?detector=anomaly&min_score=0.65", headers=reviewer).json()
    assert anomaly["total"] == 5
    assert all(e["verdict"]["reasons"][0]["detector"] == "anomaly" for e in anomaly["events"])
    last = client.get("/api/queue?page_size=7&page=6", headers=reviewer).json()
    assert len(last["events"]) == 5
    one = client.get("/api/queue?item_id=i3", headers=reviewer).json()
    assert [e["event_id"] for e in one["events"]] == ["e103"]


def test_campaign_view_and_bulk_approve_once(env):
    client, store, reviewer, _ = env
    campaigns = client.get("/api/campaigns", headers=reviewer).json()["campaigns"]
    assert campaigns[0]["campaign_id"] == "c1" and campaigns[0]["accounts"] == 30
    detail = client.get("/api/campaigns/c1", headers=reviewer).json()
    assert detail["items"] == ["target"] and len(detail["accounts"]) == 30
    body = {"decision": "approve", "note": "checked: real fan club"}
    first = client.post("/api/campaigns/c1/decision", json=body, headers=reviewer).json()
    again = client.post("/api/campaigns/c1/decision", json=body, headers=reviewer).json()
    assert (first["changed"], again["changed"]) == (30, 0)
    assert len(store.unsent()) == 30, "each approved event is queued for release once"
    assert client.get("/api/queue", headers=reviewer).json()["total"] == 10
    audit = client.get("/api/audit", headers=reviewer).json()["entries"]
    assert [(a["actor"], a["action"], a["target"], a["count"]) for a in audit] == [
        ("rita", "approve", "campaign:c1", 0),
        ("rita", "approve", "campaign:c1", 30),
    ]
    assert audit[1]["note"] == "checked: real fan club"


def test_reject_keeps_the_event_out_of_release(env):
    client, store, reviewer, _ = env
    r = client.post(
        "/api/events/e100/decision", json={"decision": "reject", "note": "spam"}, headers=reviewer
    )
    assert r.json()["changed"] == 1
    assert store.unsent() == []
    flip = client.post(
        "/api/events/e100/decision", json={"decision": "approve", "note": "oops"}, headers=reviewer
    )
    assert flip.json()["changed"] == 0, "a rejection is final"
    assert client.get("/api/queue?status=rejected", headers=reviewer).json()["total"] == 1


@pytest.mark.parametrize(
    "path",
    ["/api/me", "/api/queue", "/api/campaigns", "/api/audit", "/api/events/e1", "/api/settings"],
)
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_nothing_is_read_without_a_valid_token(env, path, header):
    client = env[0]
    headers = {"Authorization": header} if header else {}
    assert client.get(path, headers=headers).status_code == 401


def test_nothing_is_changed_without_a_valid_token(env):
    client, store, _, _ = env
    r = client.post("/api/campaigns/c1/decision", json={"decision": "approve", "note": "x" * 5})
    assert r.status_code == 401
    assert store.unsent() == [] and store.audit() == []


def test_reviewer_cannot_change_settings_admin_can(env):
    client, store, reviewer, admin = env
    assert (
        client.put("/api/settings/page_size", json={"value": "20"}, headers=reviewer).status_code
        == 403
    )
    assert (
        client.put("/api/settings/page_size", json={"value": "20"}, headers=admin).status_code
        == 200
    )
    assert client.get("/api/settings", headers=reviewer).json() == {"page_size": "20"}


def test_audit_log_cannot_be_rewritten(env):
    client, store, reviewer, _ = env
    client.post(
        "/api/events/e1/decision", json={"decision": "reject", "note": "bad"}, headers=reviewer
    )
    with pytest.raises(Exception, match="append-only"):  # noqa: B017 - each driver's own error
        store.backend.query("DELETE FROM audit")
    with pytest.raises(Exception, match="append-only"):  # noqa: B017
        store.backend.query("UPDATE audit SET note = 'nothing to see'")
    assert len(store.audit()) == 1
    assert client.delete("/api/audit", headers=reviewer).status_code == 405


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/events/e1/decision", {"decision": "approve"}, 422),  # note required
        ("post", "/api/events/e1/decision", {"decision": "approve", "note": ""}, 422),
        ("post", "/api/events/e1/decision", {"decision": "delete", "note": "abc"}, 422),
        ("post", "/api/events/e1/decision", {"decision": "approve", "note": "a" * 2001}, 422),
        ("post", "/api/events/e1/decision", {"decision": "approve", "note": "ok!", "x": 1}, 422),
        ("post", "/api/events/e1/decision", "not json", 400),
        ("post", "/api/events/nope/decision", {"decision": "approve", "note": "abc"}, 404),
        ("get", "/api/queue?page=0", None, 422),
        ("get", "/api/queue?page_size=100000", None, 422),
        ("get", "/api/queue?sort=event_id;DROP TABLE quarantine", None, 422),
        ("get", "/api/queue?status=pending' OR '1'='1", None, 422),
        ("get", "/api/queue?min_score=abc", None, 422),
        ("get", "/api/queue?detector=%25", None, 422),
        ("get", "/api/campaigns?status=all", None, 422),
        ("put", "/api/settings/a;b", {"value": "1"}, 422),
    ],
)
def test_malformed_and_hostile_input_is_refused(env, method, path, body, status):
    client, store, reviewer, admin = env
    kwargs = {"headers": admin}
    if isinstance(body, str):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    assert getattr(client, method)(path, **kwargs).status_code == status
    assert client.get("/api/queue", headers=reviewer).json()["total"] == 40


def test_hostile_text_is_stored_as_data(env):
    client, store, reviewer, _ = env
    note = "<script>alert(1)</script>'); DROP TABLE audit;--"
    client.post(
        "/api/events/e2/decision", json={"decision": "reject", "note": note}, headers=reviewer
    )
    assert store.audit()[0]["note"] == note
    item = client.get("/api/queue?item_id=' OR 1=1 --", headers=reviewer).json()
    assert item["total"] == 0


def test_metrics_and_page_need_no_token(env):
    from streamguard.quarantine.service import review_registry

    client, store, _, _ = env
    metrics_client = TestClient(create_app(store, review_registry(store)))
    text = metrics_client.get("/metrics").text
    assert "streamguard_review_queue_depth_events 40.0" in text
    assert 'streamguard_review_decisions_total{outcome="approved"} 0.0' in text
    page = client.get("/")
    assert page.status_code == 200 and "StreamGuard review queue" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

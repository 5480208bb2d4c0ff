"""Rate limits on the routes that take tickets, per user and per client address, over HTTP: each
test serves its own app with tight limits (the session's `api` is not limited)."""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.conftest import EVENT, served
from tests.e2e.test_api import assert_problem, key


@contextmanager
def limited_api(stack, **limits):
    from boxoffice.api.app import create_app
    from boxoffice.api.ratelimit import RateLimits
    from boxoffice.runtime.emulators import firestore_client

    app = create_app(db=firestore_client(stack), project=stack.project, rate_limits=RateLimits.parse(**limits))
    with served(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def purchase(c, who, event_id, headers=None):
    return c.post("/v1/purchases", json={"event_id": event_id, "quantity": 1},
                  headers=who.headers | {"Idempotency-Key": key()} | (headers or {}))


@pytest.fixture
def event_id(http, user):
    r = http.post("/v1/events", json=EVENT | {"capacity": 50, "per_user_limit": 50}, headers=user(organiser=True).headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_user_over_the_limit_gets_429_with_retry_after_and_nothing_is_written(stack, user, event_id, dump):
    ann, bob = user(), user()
    with limited_api(stack, per_user="3/minute", per_ip="off") as c:
        assert [purchase(c, ann, event_id).status_code for _ in range(3)] == [201, 201, 201]
        before = dump()
        for request in (lambda: purchase(c, ann, event_id),
                        lambda: c.post("/v1/holds", json={"event_id": event_id, "quantity": 1},
                                       headers=ann.headers | {"Idempotency-Key": key()}),
                        lambda: c.post("/v1/holds/h_any/confirm", headers=ann.headers)):
            r = request()
            assert_problem(r, 429, "rate_limited")
            assert 1 <= int(r.headers["retry-after"]) <= 60
        assert dump() == before
        assert purchase(c, bob, event_id).status_code == 201  # another user is not held back
        assert c.get("/v1/orders", headers=ann.headers).status_code == 200  # reads are not limited


def test_an_address_over_the_limit_is_refused_before_its_token_is_checked(stack, user, event_id):
    ann, bob = user(), user()
    with limited_api(stack, per_user="off", per_ip="2/minute") as c:
        assert purchase(c, ann, event_id).status_code == 201
        forged = c.post("/v1/purchases", json={"event_id": event_id, "quantity": 1},
                        headers={"Authorization": "Bearer not-a-token", "Idempotency-Key": key()})
        assert_problem(forged, 401, "unauthenticated")  # counted all the same
        assert_problem(purchase(c, bob, event_id), 429, "rate_limited")


def test_forwarded_addresses_count_only_behind_a_trusted_proxy(stack, user, event_id):
    ann = user()
    with limited_api(stack, per_user="off", per_ip="1/minute", proxy_hops=1) as c:
        # behind one proxy, the last X-Forwarded-For entry is the client: two clients, one each
        assert purchase(c, ann, event_id, {"X-Forwarded-For": "198.51.100.7"}).status_code == 201
        assert purchase(c, ann, event_id, {"X-Forwarded-For": "spoofed, 198.51.100.8"}).status_code == 201
        assert_problem(purchase(c, ann, event_id, {"X-Forwarded-For": "other, 198.51.100.8"}), 429, "rate_limited")
    with limited_api(stack, per_user="off", per_ip="1/minute") as c:
        # no proxy trusted: the header is the client's own claim and changes nothing
        assert purchase(c, ann, event_id, {"X-Forwarded-For": "198.51.100.9"}).status_code == 201
        assert_problem(purchase(c, ann, event_id, {"X-Forwarded-For": "198.51.100.10"}), 429, "rate_limited")


def test_limits_are_read_from_the_environment(monkeypatch):
    from boxoffice.api.ratelimit import RateLimits

    monkeypatch.setenv("BOXOFFICE_RATE_LIMIT_PER_USER", "2/second;10/minute")
    monkeypatch.setenv("BOXOFFICE_RATE_LIMIT_PER_IP", "off")
    monkeypatch.setenv("BOXOFFICE_TRUSTED_PROXY_HOPS", "1")
    limits = RateLimits.from_env()
    assert [str(i) for i in limits.per_user] == ["2 per 1 second", "10 per 1 minute"]
    assert limits.per_ip == () and limits.proxy_hops == 1 and limits.storage == "memory://"
    with pytest.raises(ValueError):
        RateLimits.parse(per_user="lots")

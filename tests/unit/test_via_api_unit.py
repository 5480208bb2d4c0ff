"""How API answers become the library's outcomes, for `simulate --via-api` (no server, no database)."""

from __future__ import annotations

import pytest

from boxoffice.domain import errors
from boxoffice.domain.model import OrderStatus
from boxoffice.loadtest.api_client import ApiReply
from boxoffice.loadtest.via_api import ApiError, error_for, order_from_body


def problem(status: int, code: str) -> ApiReply:
    return ApiReply(status, {"status": status, "code": code, "detail": f"detail of {code}"}, False)


@pytest.mark.parametrize(("status", "code", "expected"), [
    (409, "sold_out", errors.SoldOut),
    (409, "not_enough_tickets", errors.NotEnoughTickets),
    (409, "per_user_limit_exceeded", errors.PerUserLimitExceeded),
    (409, "idempotency_conflict", errors.IdempotencyConflict),
    (409, "event_not_on_sale", errors.EventNotOnSale),
    (404, "event_not_found", errors.EventNotFound),
    (422, "invalid_quantity", errors.InvalidQuantity),
    (503, "contention_timeout", errors.ContentionTimeout),
    (503, "auth_unavailable", errors.ContentionTimeout),
])
def test_problem_codes_become_the_domain_errors(status, code, expected):
    exc = error_for(problem(status, code))
    assert type(exc) is expected
    assert exc.code == code if code != "auth_unavailable" else exc.code == "contention_timeout"
    assert exc.message == f"detail of {code}"


def test_not_enough_is_still_a_sold_out_but_told_apart():
    exc = error_for(problem(409, "not_enough_tickets"))
    assert isinstance(exc, errors.SoldOut) and isinstance(exc, errors.NotEnoughTickets)
    assert not isinstance(error_for(problem(409, "sold_out")), errors.NotEnoughTickets)


@pytest.mark.parametrize(("status", "code"), [
    (401, "unauthenticated"), (500, "internal_error"), (404, "http_404"), (409, "boxoffice_error"),
])
def test_other_answers_are_api_errors_not_domain_refusals(status, code):
    exc = error_for(problem(status, code))
    assert isinstance(exc, ApiError) and not isinstance(exc, errors.BoxofficeError)
    assert str(exc).startswith(f"HTTP {status} {code}")


def test_an_order_body_becomes_an_order():
    body = {"id": "o1", "event_id": "e1", "user_id": "u1", "quantity": 2, "cancelled_quantity": 0,
            "unit_price": 4500, "amount": 9000, "currency": "EUR", "status": "confirmed",
            "ticket_ids": ["o1-t01", "o1-t02"], "idempotency_key": "buy-1"}
    order = order_from_body(body)
    assert (order.id, order.user_id, order.quantity, order.amount) == ("o1", "u1", 2, 9000)
    assert order.status is OrderStatus.CONFIRMED and order.ticket_ids == ("o1-t01", "o1-t02")

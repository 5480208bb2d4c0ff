"""The per-process shard router: hints, local claims and the sold-out recheck. No database."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import pytest

from boxoffice.domain import errors
from boxoffice.domain.model import InventoryShard, new_event
from boxoffice.services.purchasing import make_request
from boxoffice.store.purchases import ShardRouter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(shards: int = 3):
    return new_event(event_id="ev", name="n", venue="v", starts_at=datetime(2027, 1, 1, tzinfo=UTC),
                     price=1, currency="EUR", capacity=30, per_order_max=1, shard_count=shards)


def stock(*pairs: tuple[str, int]) -> list[InventoryShard]:
    return [InventoryShard(id=s, capacity=10, available=a, sold=10 - a) for s, a in pairs]


def test_unknown_event_has_no_hint():
    assert ShardRouter().claim_likely("ev", random.Random()) is None


def test_claims_are_exclusive_within_a_process_and_released():
    router = ShardRouter()
    router.learn_event(event(shards=2))
    rng = random.Random(0)
    first = router.claim_likely("ev", rng)
    second = router.claim_likely("ev", rng)
    assert first and second and first[1] and second[1]
    assert {first[0], second[0]} == {"s000", "s001"}
    router.release("ev", [first[0]])
    assert router.claim_likely("ev", rng) == (first[0], True)


def test_a_buyer_who_waited_long_enough_races_unclaimed_instead_of_failing():
    router = ShardRouter()
    router.MAX_WAIT_S = 0.05
    router.learn_event(event(shards=1))
    assert router.claim_likely("ev", random.Random()) == ("s000", True)
    started = time.monotonic()
    assert router.claim_likely("ev", random.Random()) == ("s000", False)
    assert time.monotonic() - started >= 0.05


def test_a_waiting_buyer_gets_the_shard_as_soon_as_it_is_released():
    router = ShardRouter()
    router.learn_event(event(shards=1))
    held = router.claim_likely("ev", random.Random())
    assert held is not None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(router.claim_likely("ev", random.Random())))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    router.release("ev", [held[0]])
    waiter.join(timeout=2)
    assert got == [("s000", True)]


def test_waiting_buyers_hear_at_once_when_the_last_stocked_shard_empties():
    router = ShardRouter()
    router.learn_event(event(shards=3))
    router.learn_stock("ev", stock(("s001", 1)))
    held = router.claim_likely("ev", random.Random())
    assert held == ("s001", True)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(router.claim_likely("ev", random.Random())))
    waiter.start()
    time.sleep(0.05)
    router.forget("ev", "s001")  # the holder sold the last ticket of s001
    waiter.join(timeout=0.5)
    assert got == [None]


def test_non_exclusive_router_never_blocks():
    router = ShardRouter(exclusive=False)
    router.learn_event(event(shards=1))
    assert [router.claim_likely("ev", random.Random()) for _ in range(3)] == [("s000", False)] * 3


def test_buyers_are_routed_to_shards_last_seen_with_stock():
    router = ShardRouter()
    router.learn_event(event(shards=3))
    router.learn_stock("ev", stock(("s000", 0), ("s001", 4), ("s002", 0)))
    assert router.claim_likely("ev", random.Random()) == ("s001", True)


def test_after_a_sell_out_one_buyer_rechecks_when_the_answer_is_stale():
    clock = Clock()
    router = ShardRouter(clock=clock)
    router.learn_event(event())
    router.learn_stock("ev", [])
    assert router.claim_likely("ev", random.Random()) is None
    assert router.knows("ev")
    assert router.should_recheck_sold_out("ev") is False  # fresh: everybody hears "sold out"
    clock.now += ShardRouter.SOLD_OUT_TTL_S + 0.01
    assert router.should_recheck_sold_out("ev") is True  # stale: this buyer re-checks ...
    assert router.should_recheck_sold_out("ev") is False  # ... and the others do not pile on
    router.learn_stock("ev", stock(("s002", 1)))  # tickets came back
    assert router.claim_likely("ev", random.Random()) == ("s002", True)


def test_requests_are_validated_before_any_database_access():
    for args in (("", "u", 1, "k"), ("ev", "", 1, "k"), ("ev", "u/x", 1, "k"), ("ev", "u", 0, "k"),
                 ("ev", "u", 51, "k"), ("ev", "u", 1, "bad key")):
        with pytest.raises(errors.InvalidRequest):
            make_request(*args)  # type: ignore[arg-type]


def test_a_released_shard_goes_to_the_buyer_first_in_line_not_to_a_newcomer():
    router = ShardRouter()
    router.learn_event(event(shards=1))
    held = router.claim_likely("ev", random.Random())
    assert held == ("s000", True)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(router.claim_likely("ev", random.Random())))
    waiter.start()
    time.sleep(0.05)
    router.release("ev", ["s000"])
    router.MAX_WAIT_S = 0.05  # the newcomer may not barge in: it waits, then races unclaimed
    newcomer = router.claim_likely("ev", random.Random())
    waiter.join(timeout=2)
    assert got == [("s000", True)]
    assert newcomer == ("s000", False)


def test_when_the_last_known_shard_empties_one_buyer_confirms_and_the_rest_hear_sold_out():
    clock = Clock()
    router = ShardRouter(clock=clock)
    router.learn_event(event(shards=3))
    router.learn_stock("ev", stock(("s001", 1)))
    router.forget("ev", "s001")  # its last ticket was just sold
    assert router.claim_likely("ev", random.Random()) is None
    assert router.should_recheck_sold_out("ev") is True
    assert router.should_recheck_sold_out("ev") is False

"""``EncodedWriteBatch`` stages, write for write, the same protobuf messages as the library's
``WriteBatch`` (no database: staging is local; the allocator's tests commit it on the emulator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.batch import WriteBatch
from google.protobuf import timestamp_pb2
from tests.unit.test_typed_allocation import NOW, req, seated_event, stock_of

from boxoffice.domain.allocation import Grant, Refusal, RequestKind, allocate
from boxoffice.domain.errors import SoldOut
from boxoffice.domain.model import ShardMove
from boxoffice.services.allocator import _taken
from boxoffice.store.allocation import stage_free_seats, stage_grant, stage_take
from boxoffice.store.encoded_batch import EncodedWriteBatch
from boxoffice.store.leases import Lease, stage_fence
from boxoffice.store.requests import stage_answer


@pytest.fixture(scope="module")
def db() -> firestore.Client:
    return firestore.Client(project="demo-unit", credentials=AnonymousCredentials())


class Recorder:
    """Records the calls a staging function makes (ticket codes and ids are random: the same
    recorded calls are then replayed into both batches)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((method, args, kwargs))


def both(db: firestore.Client, stage: Any, *, fallbacks: int | None = None) -> tuple[list[Any], list[Any]]:
    recorder = Recorder()
    stage(recorder)
    library, encoded = WriteBatch(db), EncodedWriteBatch(db)
    for batch in (library, encoded):
        for method, args, kwargs in recorder.calls:
            getattr(batch, method)(*args, **kwargs)
    if fallbacks is not None:
        assert encoded.fallbacks == fallbacks  # the encoder staged them itself
    return [w._pb for w in library._write_pbs], [w._pb for w in encoded._write_pbs]


def assert_same(db: firestore.Client, stage: Any, *, fallbacks: int | None = None) -> None:
    library, encoded = both(db, stage, fallbacks=fallbacks)
    assert len(library) == len(encoded) > 0
    for lib, enc in zip(library, encoded, strict=True):
        assert enc == lib, f"\nlibrary:\n{lib}\nencoded:\n{enc}"


def test_an_allocator_batch_of_purchases_holds_answers_and_seats_is_staged_as_the_library_stages_it(db) -> None:
    event = seated_event()
    requests = [req(1, lines=[("stalls", 2)]), req(2, lines=[("standing", 3), ("early", 1)]),
                req(3, seats=["st:A:1"]), req(4, lines=[("vip", 2)]), req(5, lines=[("vip", 2)])]
    held = req(6, lines=[("standing", 2)])
    requests.append(type(held)(**{**held.__dict__, "kind": RequestKind.HOLD, "hold_ttl_s": 90.0}))
    from boxoffice.domain.seating import SeatBook

    allocation = allocate(event, stock_of(event), requests, {}, counted_types={},
                          seats=SeatBook(event.seat_map, []), now=NOW)  # type: ignore[arg-type]
    assert any(isinstance(d, Grant) for d in allocation.decisions)
    lease = Lease("ev", "me", 3, NOW, DatetimeWithNanoseconds(2027, 1, 1, 12, 0, 1, nanosecond=123456789, tzinfo=UTC))
    prior = datetime(2027, 1, 1, 11, 59, tzinfo=UTC)

    def stage(batch: Any) -> None:
        stage_fence(db, batch, lease, 5.0)
        for move, per_shard in _taken([d for d in allocation.decisions if isinstance(d, Grant)]).items():
            stage_take(db, batch, "ev", per_shard, move)
        for i, d in enumerate(allocation.decisions):
            if isinstance(d, Grant):
                stage_grant(db, batch, event, d, NOW)
            stage_answer(db, batch, d, batch="b1", epoch=3, prior_update_time=prior if i % 2 else None)
        stage_free_seats(db, batch, "ev", "m1", ["st:B:1", "st:B:2"])

    assert_same(db, stage, fallbacks=0)


def test_a_refusal_and_a_shard_give_back_are_staged_as_the_library_stages_them(db) -> None:
    refusal = Refusal(req(9), SoldOut("ev"))

    def stage(batch: Any) -> None:
        stage_answer(db, batch, refusal, batch="b2", epoch=1)
        stage_take(db, batch, "ev", {"s0": 2, "s1": 0, "s2": 5}, ShardMove.HOLD)

    assert_same(db, stage, fallbacks=0)


ODD_VALUES: list[dict[str, Any]] = [
    {"none": None, "t": True, "f": False, "i": -7, "big": 2**62, "x": 1.5, "s": "é ✓", "b": b"\x00\xff"},
    {"naive": datetime(2027, 5, 1, 8, 30, 15, 250000), "aware": datetime(2027, 5, 1, tzinfo=timezone(timedelta(hours=2))),
     "nanos": DatetimeWithNanoseconds(2027, 5, 1, 1, 2, 3, nanosecond=999, tzinfo=UTC)},
    {"list": [1, "a", None, [2, 3], {"k": "v"}], "empty_list": [], "tuple": (1, 2), "empty_map": {}},
    {"nested": {"a": {"b": {"c": 1}}, "empty": {}, "ts": firestore.SERVER_TIMESTAMP, "n": firestore.Increment(2)}},
    {"odd-name": 1, "`quoted`": 2, "with space": {"in.ner": 3}, "ünï": 4},
    {"union": firestore.ArrayUnion(["a", 1, None]), "inc": firestore.Increment(0.5), "at": firestore.SERVER_TIMESTAMP},
    {"only": firestore.SERVER_TIMESTAMP},
    {},
    # Left to the library (the encoder does not encode them): the result must be the same.
    {"gone": firestore.DELETE_FIELD, "keep": 1},
    {"where": firestore.GeoPoint(1.0, 2.0)},
    {"rm": firestore.ArrayRemove([1]), "max": firestore.Maximum(3)},
    {"set": {1, 2}},
]


@pytest.mark.parametrize("data", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_create_set_and_merge_encode_every_value_shape_as_the_library_does(db, data) -> None:
    ref = db.collection("c").document("d")
    for method, kwargs in (("create", {}), ("set", {}), ("set", {"merge": True}), ("set", {"merge": ["x"]})):
        try:
            getattr(WriteBatch(db), method)(ref, data, **kwargs)
        except (ValueError, TypeError) as exc:  # the library refuses it: so must the encoder
            with pytest.raises(type(exc)):
                getattr(EncodedWriteBatch(db), method)(ref, data, **kwargs)
            continue
        assert_same(db, lambda batch, m=method, kw=kwargs: getattr(batch, m)(ref, data, **kw))


UPDATES: list[dict[str, Any]] = [
    {"a.b": 1, "c": {"d": firestore.Increment(1)}, "e": firestore.SERVER_TIMESTAMP},
    {"types": {"vip": firestore.Increment(-2)}, "held": firestore.Increment(0)},
    {"`a.b`.c": "x", "list": [1, 2], "m": {}},
    {"gone": firestore.DELETE_FIELD},
    {},
]
STAMP = timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=5)


@pytest.mark.parametrize("data", UPDATES, ids=range(len(UPDATES)))
@pytest.mark.parametrize("option", [None, "update_time", "exists_false"])
def test_update_and_delete_with_preconditions_encode_as_the_library_does(db, data, option) -> None:
    ref = db.collection("c").document("d")
    opt = {None: None, "update_time": db.write_option(last_update_time=STAMP),
           "exists_false": db.write_option(exists=False)}[option]
    assert_same(db, lambda batch: batch.delete(ref, option=opt))
    try:
        WriteBatch(db).update(ref, data, option=opt)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)[:20]):
            EncodedWriteBatch(db).update(ref, data, option=opt)
        return
    assert_same(db, lambda batch: batch.update(ref, data, option=opt))

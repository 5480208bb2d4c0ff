"""Seat maps and the choice of seats: examples, then properties over generated maps and requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxoffice.domain import errors
from boxoffice.domain.seating import RowSpec, SeatBook, SeatMap, SectionSpec, new_seat_map


def hall(blocked: tuple[str, ...] = ()) -> SeatMap:
    """Stalls: rows A and B of 10 seats with an aisle after 5 in B; a VIP box of 4 in row A's middle."""
    return new_seat_map(
        [SectionSpec("stalls", (RowSpec("A", 1, 10, "stalls", types={"vip": (4, 5, 6, 7)}),
                                RowSpec("B", 1, 11, "stalls", missing=(6,)))),
         SectionSpec("balcony", (RowSpec("A", 1, 6, "balcony"),))],
        blocked,
    )


def test_seat_counts_per_type_leave_out_blocked_seats():
    assert hall().seat_counts() == {"stalls": 16, "vip": 4, "balcony": 6}
    assert hall(("balcony:A:1",)).seat_counts()["balcony"] == 5


def test_best_available_is_the_front_row_closest_to_its_middle():
    book = SeatBook(hall())
    choice = book.take_best("vip", 2)
    assert choice.together and choice.seat_ids == ("stalls:A:5", "stalls:A:6")
    # Row A has 3 stalls seats either side of the box: a pair fits, the one nearer the middle wins
    # (left and right are the same distance: the lower number).
    assert book.take_best("stalls", 2).seat_ids == ("stalls:A:2", "stalls:A:3")


def test_an_aisle_separates_seats_and_a_group_goes_to_a_row_where_it_fits_together():
    book = SeatBook(hall())
    book.take_specific(["stalls:A:1", "stalls:A:2", "stalls:A:9"])
    # Row A has 1 + 1 stalls seats left apart; B has 5 and 5 either side of the aisle.
    choice = book.take_best("stalls", 5)
    assert choice.together and choice.seat_ids == tuple(f"stalls:B:{n}" for n in range(1, 6))
    assert not book.best_available("stalls", 6).together


def test_without_a_free_block_the_request_is_split_into_the_fewest_blocks():
    book = SeatBook(hall(), taken=["balcony:A:3"])
    choice = book.take_best("balcony", 4)
    assert not choice.together
    # The longest free block (4-6) first, then the best single seat left (2 is nearer the middle).
    assert choice.seat_ids == ("balcony:A:2", "balcony:A:4", "balcony:A:5", "balcony:A:6")
    assert book.free_count("balcony") == 1


def test_asking_for_more_seats_than_are_free_of_a_type_is_sold_out():
    with pytest.raises(errors.TicketTypeSoldOut) as caught:
        SeatBook(hall(("balcony:A:6",))).take_best("balcony", 6, "ev")
    assert caught.value.available == 5


def test_specific_seats_are_refused_when_taken_blocked_or_not_on_the_map():
    book = SeatBook(hall(("balcony:A:6",)), taken=["stalls:A:1"])
    with pytest.raises(errors.SeatUnavailable, match="stalls:A:1 is taken"):
        book.take_specific(["stalls:A:2", "stalls:A:1"])
    with pytest.raises(errors.SeatUnavailable, match="blocked"):
        book.take_specific(["balcony:A:6"])
    with pytest.raises(errors.SeatNotInMap, match="stalls:B:6"):
        book.take_specific(["stalls:B:6"])  # the aisle
    with pytest.raises(errors.InvalidSeatMap, match="twice"):
        book.take_specific(["stalls:A:2", "stalls:A:2"])
    assert "stalls:A:2" not in book.taken  # a refused request takes nothing
    book.take_specific(["stalls:A:2"])
    book.release(["stalls:A:2", "stalls:A:3"])
    assert book.is_free("stalls:A:2") and book.free_count("stalls") == 15


@pytest.mark.parametrize(
    "sections,blocked,error,fragment",
    [
        ([], (), errors.InvalidSeatMap, "at least one section"),
        ([SectionSpec("s", ())], (), errors.InvalidSeatMap, "no rows"),
        ([SectionSpec("s", (RowSpec("A", 1, 2, "t"), RowSpec("A", 1, 2, "t")))], (), errors.InvalidSeatMap,
         "row twice"),
        ([SectionSpec("s", (RowSpec("A", 3, 2, "t"),))], (), errors.InvalidSeatMap, "first to last"),
        ([SectionSpec("s:1", (RowSpec("A", 1, 2, "t"),))], (), errors.InvalidSeatMap, "section id"),
        ([SectionSpec("s", (RowSpec("A", 1, 2, "t", types={"v": (3,)}),))], (), errors.SeatNotInMap, "s:A:3"),
        ([SectionSpec("s", (RowSpec("A", 1, 2, "t"),))], ("s:B:1",), errors.SeatNotInMap, "s:B:1"),
        ([SectionSpec("s", (RowSpec("A", 1, 20_001, "t"),))], (), errors.InvalidSeatMap, "at most"),
    ],
)
def test_malformed_seat_maps_are_refused(sections: list[SectionSpec], blocked: tuple[str, ...],
                                         error: type[Exception], fragment: str):
    with pytest.raises(error, match=fragment):
        new_seat_map(sections, blocked)


# --- properties ------------------------------------------------------------------------------

TYPES = ("a", "b")


@st.composite
def seat_maps(draw: st.DrawFn) -> SeatMap:
    sections = []
    for s in range(draw(st.integers(1, 3))):
        rows = []
        for r in range(draw(st.integers(1, 4))):
            last = draw(st.integers(1, 12))
            missing = tuple(draw(st.sets(st.integers(1, last), max_size=2)))
            if len(missing) == last:
                missing = ()
            rows.append(RowSpec(f"R{r}", 1, last, draw(st.sampled_from(TYPES)), missing=missing,
                                types={"b": tuple(draw(st.sets(st.integers(1, last), max_size=3)) - set(missing))}))
        sections.append(SectionSpec(f"S{s}", tuple(rows)))
    layout = new_seat_map(sections)
    ids = sorted(layout.seats)
    blocked = draw(st.sets(st.sampled_from(ids), max_size=3))
    return new_seat_map(sections, blocked)


requests = st.lists(
    st.one_of(
        st.tuples(st.just("best"), st.sampled_from(TYPES), st.integers(1, 6)),
        st.tuples(st.just("specific"), st.integers(0, 10_000), st.integers(1, 3)),
        st.tuples(st.just("release"), st.integers(0, 10_000), st.integers(1, 3)),
    ),
    max_size=40,
)


def has_free_block(book: SeatBook, type_id: str, n: int) -> bool:
    for row in book.map.rows:
        run, prev = 0, None
        for seat in row.seats:
            usable = seat.type_id == type_id and book.is_free(seat.id)
            run = run + 1 if usable and prev is not None and seat.number == prev + 1 and run else (1 if usable else 0)
            prev = seat.number
            if run >= n:
                return True
    return False


@settings(max_examples=300, deadline=None)
@given(seat_map=seat_maps(), script=requests)
def test_no_seat_is_ever_given_twice_and_a_group_sits_together_whenever_a_block_exists(
    seat_map: SeatMap, script: list[tuple[str, object, int]]
):
    book = SeatBook(seat_map)
    ids = sorted(seat_map.seats)
    owner: dict[str, int] = {}  # seat -> request that holds it now
    for i, (kind, arg, n) in enumerate(script):
        if kind == "best":
            type_id = str(arg)
            block_exists = has_free_block(book, type_id, n)
            try:
                choice = book.take_best(type_id, n)
            except errors.TicketTypeSoldOut:
                assert book.free_count(type_id) < n
                continue
            seats = choice.seats
            assert len(seats) == n and all(s.type_id == type_id for s in seats)
            assert choice.together == block_exists
        elif kind == "specific":
            wanted = [ids[(int(arg) + k * 7) % len(ids)] for k in range(n)]
            free_before = all(book.is_free(s) for s in wanted) and len(set(wanted)) == len(wanted)
            try:
                seats = book.take_specific(wanted)
            except (errors.SeatUnavailable, errors.InvalidSeatMap):
                assert not free_before
                continue
            assert free_before
        else:
            held = sorted(owner)
            if held:
                gone = {held[(int(arg) + k) % len(held)] for k in range(n)}
                book.release(gone)
                for s in gone:
                    del owner[s]
            continue
        for s in seats:
            assert s.id not in owner, f"{s.id} given to request {owner[s.id]} and again to {i}"
            assert s.id not in seat_map.blocked
            owner[s.id] = i
    assert book.taken == set(owner)
    counts = seat_map.seat_counts()
    for t in TYPES:
        assert book.free_count(t) + sum(1 for s in owner if seat_map.seats[s].type_id == t) == counts.get(t, 0)


@settings(max_examples=100, deadline=None)
@given(seat_map=seat_maps(), script=st.lists(st.tuples(st.sampled_from(TYPES), st.integers(1, 5)), max_size=30))
def test_the_same_requests_in_the_same_order_get_the_same_seats(
    seat_map: SeatMap, script: list[tuple[str, int]]
):
    def run() -> list[tuple[str, ...]]:
        book, out = SeatBook(seat_map), []
        for type_id, n in script:
            try:
                out.append(book.take_best(type_id, n).seat_ids)
            except errors.TicketTypeSoldOut:
                out.append(())
        return out

    assert run() == run()

"""Reserved seating: seat maps and the choice of seats. Pure Python, no I/O.

A seat map has sections, each with rows, each with numbered seats. Every seat is sold as one
ticket type; a seat can be blocked (a camera position, a broken seat) and is then never sold.
Two seats are *adjacent* when they are in the same row and their numbers are consecutive: a gap
in the numbering (an aisle, a pillar) separates them.

**Best available** is a fixed rule, so the same requests in the same order always get the
same seats: sections in the order the map lists them (list the best first, e.g. closest to the
stage), then rows in the order listed within a section (front first), then within a row the block
whose middle is closest to the row's middle (ties: the lower seat number). A request for N seats
of a type gets the best block of N adjacent free seats if any row has one; otherwise it is split
into as few blocks as possible (the longest free block first, then the rest the same way), and
the choice says it is not together.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from boxoffice.domain.errors import InvalidSeatMap, SeatNotInMap, SeatUnavailable, TicketTypeSoldOut

MAX_SEATS = 20_000
_PART = re.compile(r"^[A-Za-z0-9_-]{1,20}$")


def seat_id(section: str, row: str, number: int) -> str:
    """``section:row:number``; ':' never appears in a section or row id."""
    return f"{section}:{row}:{number}"


@dataclass(frozen=True)
class Seat:
    section: str
    row: str
    number: int
    type_id: str

    @property
    def id(self) -> str:
        return seat_id(self.section, self.row, self.number)


@dataclass(frozen=True)
class RowSpec:
    """Seats ``first..last`` of a row, less ``missing`` numbers (aisles, pillars).

    Every seat is of ``type_id`` unless ``types`` maps it to another type.
    """

    id: str
    first: int
    last: int
    type_id: str
    missing: tuple[int, ...] = ()
    types: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SectionSpec:
    id: str
    rows: tuple[RowSpec, ...]
    name: str = ""


@dataclass(frozen=True)
class Row:
    section: str
    id: str
    seats: tuple[Seat, ...]  # by number, ascending

    @property
    def middle(self) -> float:
        return (self.seats[0].number + self.seats[-1].number) / 2


@dataclass(frozen=True)
class SeatMap:
    """The layout of an event's seats (validated). What is taken lives in a ``SeatBook``."""

    sections: tuple[SectionSpec, ...]
    rows: tuple[Row, ...]  # in "best first" order: section order, then row order
    blocked: frozenset[str]

    @property
    def seats(self) -> dict[str, Seat]:
        return {s.id: s for row in self.rows for s in row.seats}

    def seat_counts(self) -> dict[str, int]:
        """Seats of each type that can be sold (blocked seats do not count): the type's capacity."""
        out: dict[str, int] = {}
        for row in self.rows:
            for s in row.seats:
                if s.id not in self.blocked:
                    out[s.type_id] = out.get(s.type_id, 0) + 1
        return out

    def section_of(self, seat: str) -> str:
        return seat.split(":", 1)[0]


def new_seat_map(sections: Sequence[SectionSpec], blocked: Iterable[str] = ()) -> SeatMap:
    """Check a seat map and build it. Raises ``InvalidSeatMap`` or ``SeatNotInMap`` (blocked seats)."""
    problems: list[str] = []
    if not sections:
        problems.append("a seat map needs at least one section")
    section_ids = [s.id for s in sections]
    if len(set(section_ids)) != len(section_ids):
        problems.append(f"section ids appear twice: {sorted({i for i in section_ids if section_ids.count(i) > 1})}")
    rows: list[Row] = []
    for section in sections:
        if not _PART.match(section.id):
            problems.append(f"section id {section.id!r} must be 1-20 letters, digits, '_' or '-'")
        if not section.rows:
            problems.append(f"section {section.id!r} has no rows")
        row_ids = [r.id for r in section.rows]
        if len(set(row_ids)) != len(row_ids):
            problems.append(f"section {section.id!r} lists a row twice")
        for spec in section.rows:
            where = f"row {section.id}:{spec.id}"
            if not _PART.match(spec.id):
                problems.append(f"{where}: row id must be 1-20 letters, digits, '_' or '-'")
            if not 1 <= spec.first <= spec.last:
                problems.append(f"{where}: seats run from first to last, both 1 or more")
                continue
            numbers = [n for n in range(spec.first, spec.last + 1) if n not in set(spec.missing)]
            if not numbers:
                problems.append(f"{where} has no seats")
                continue
            type_of = dict.fromkeys(numbers, spec.type_id)
            outside: list[str] = []
            for type_id, nums in spec.types.items():
                for n in nums:
                    if n in type_of:
                        type_of[n] = type_id
                    else:
                        outside.append(seat_id(section.id, spec.id, n))
            if outside:
                raise SeatNotInMap(outside)
            rows.append(Row(section.id, spec.id,
                            tuple(Seat(section.id, spec.id, n, type_of[n]) for n in numbers)))
    if sum(len(r.seats) for r in rows) > MAX_SEATS:
        problems.append(f"a seat map has at most {MAX_SEATS} seats")
    if problems:
        raise InvalidSeatMap("invalid seat map: " + "; ".join(problems))
    known = {s.id for r in rows for s in r.seats}
    blocked_set = frozenset(blocked)
    outside_blocked = sorted(blocked_set - known)
    if outside_blocked:
        raise SeatNotInMap(outside_blocked)
    return SeatMap(sections=tuple(sections), rows=tuple(rows), blocked=blocked_set)


@dataclass(frozen=True)
class SeatChoice:
    seats: tuple[Seat, ...]
    together: bool  # all in one row, adjacent

    @property
    def seat_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.seats)


def _runs(row: Row, usable: list[bool]) -> list[tuple[int, int]]:
    """Maximal blocks of adjacent usable seats of a row, as (first index, length)."""
    out: list[tuple[int, int]] = []
    start = None
    for i, ok in enumerate(usable):
        if ok and start is not None and row.seats[i].number == row.seats[i - 1].number + 1:
            continue
        if start is not None:
            out.append((start, i - start))
        start = i if ok else None
    if start is not None:
        out.append((start, len(usable) - start))
    return out


def _placement(row: Row, run_start: int, run_len: int, n: int) -> tuple[float, int]:
    """Where in a free block of ``run_len`` seats to put ``n`` of them: (distance from the middle, index)."""
    first_number = row.seats[run_start].number
    ideal = row.middle - (n - 1) / 2 - first_number  # offset of the first seat, if it could be anywhere
    best: tuple[float, int] | None = None
    for offset in {int(ideal // 1), int(ideal // 1) + 1}:
        offset = max(0, min(run_len - n, offset))
        centre = first_number + offset + (n - 1) / 2
        candidate = (abs(centre - row.middle), run_start + offset)
        if best is None or candidate < best:
            best = candidate
    assert best is not None
    return best


class SeatBook:
    """Which seats of one map are free; takes seats for requests in the order they come.

    The allocator keeps one per event in memory while it holds the lease, loaded from what was
    committed; ``taken`` is every seat sold or held.
    """

    def __init__(self, seat_map: SeatMap, taken: Iterable[str] = ()) -> None:
        self.map = seat_map
        self._seats = seat_map.seats
        self.taken: set[str] = set()
        self._free: dict[tuple[int, str], int] = {}
        for i, row in enumerate(seat_map.rows):
            for s in row.seats:
                if s.id not in seat_map.blocked:
                    self._free[(i, s.type_id)] = self._free.get((i, s.type_id), 0) + 1
        self._row_of = {s.id: i for i, row in enumerate(seat_map.rows) for s in row.seats}
        unknown = sorted(set(taken) - set(self._seats))
        if unknown:
            raise SeatNotInMap(unknown)
        self._mark(taken)

    def free_count(self, type_id: str) -> int:
        return sum(n for (_, t), n in self._free.items() if t == type_id)

    def is_free(self, seat: str) -> bool:
        return seat in self._seats and seat not in self.taken and seat not in self.map.blocked

    def best_available(self, type_id: str, quantity: int, event_id: str = "") -> SeatChoice:
        """The seats the rule above gives ``quantity`` buyers of ``type_id`` now (nothing taken).

        Raises ``TicketTypeSoldOut`` if fewer seats of the type are free.
        """
        if quantity < 1:
            raise ValueError("quantity must be positive")
        free = self.free_count(type_id)
        if free < quantity:
            raise TicketTypeSoldOut(event_id, type_id, quantity, free)
        chosen: list[Seat] = []
        excluded: set[str] = set()
        left = quantity
        while left:
            block = self._best_block(type_id, left, excluded)
            chosen.extend(block)
            excluded.update(s.id for s in block)
            left -= len(block)
        ordered = sorted(chosen, key=lambda s: (self._row_of[s.id], s.number))
        rows = {(s.section, s.row) for s in ordered}
        together = len(rows) == 1 and all(
            b.number == a.number + 1 for a, b in itertools.pairwise(ordered))
        return SeatChoice(tuple(ordered), together)

    def _best_block(self, type_id: str, n: int, excluded: set[str]) -> list[Seat]:
        """The best block of ``n`` adjacent free seats; if none, the best of the longest blocks."""
        longest: tuple[int, int, float, int] | None = None  # (-length, row index, distance, index)
        for i, row in enumerate(self.map.rows):
            if self._free.get((i, type_id), 0) == 0:
                continue
            usable = [s.type_id == type_id and s.id not in self.taken and s.id not in excluded
                      and s.id not in self.map.blocked for s in row.seats]
            fitting: tuple[float, int] | None = None
            for start, length in _runs(row, usable):
                if length >= n:
                    place = _placement(row, start, length, n)
                    fitting = place if fitting is None else min(fitting, place)
                else:
                    dist, idx = _placement(row, start, length, length)
                    candidate = (-length, i, dist, idx)
                    longest = candidate if longest is None else min(longest, candidate)
            if fitting is not None:
                return list(row.seats[fitting[1]:fitting[1] + n])
        assert longest is not None, "free_count promised a free seat"
        length, i, _, idx = -longest[0], longest[1], longest[2], longest[3]
        return list(self.map.rows[i].seats[idx:idx + length])

    def take_best(self, type_id: str, quantity: int, event_id: str = "") -> SeatChoice:
        choice = self.best_available(type_id, quantity, event_id)
        self._mark(choice.seat_ids)
        return choice

    def check_specific(self, seat_ids: Sequence[str]) -> tuple[Seat, ...]:
        """The seats named, if every one is on the map and free. Raises ``SeatNotInMap`` /
        ``SeatUnavailable`` (naming all the offending seats), ``InvalidSeatMap`` for a repeat."""
        if len(set(seat_ids)) != len(seat_ids):
            raise InvalidSeatMap("a seat is named twice in one request")
        outside = [s for s in seat_ids if s not in self._seats]
        if outside:
            raise SeatNotInMap(outside)
        blocked = [s for s in seat_ids if s in self.map.blocked]
        if blocked:
            raise SeatUnavailable(blocked, "blocked")
        taken = [s for s in seat_ids if s in self.taken]
        if taken:
            raise SeatUnavailable(taken, "taken")
        return tuple(self._seats[s] for s in seat_ids)

    def take_specific(self, seat_ids: Sequence[str]) -> tuple[Seat, ...]:
        seats = self.check_specific(seat_ids)
        self._mark(seat_ids)
        return seats

    def release(self, seat_ids: Iterable[str]) -> None:
        """Seats come back (a hold expired, a ticket was cancelled). Releasing a free seat is a no-op."""
        for s in seat_ids:
            if s in self.taken:
                self.taken.discard(s)
                seat = self._seats[s]
                key = (self._row_of[s], seat.type_id)
                self._free[key] = self._free.get(key, 0) + 1

    def _mark(self, seat_ids: Iterable[str]) -> None:
        for s in seat_ids:
            if s in self.taken or s in self.map.blocked:
                continue
            self.taken.add(s)
            self._free[(self._row_of[s], self._seats[s].type_id)] -= 1

    def copy(self) -> SeatBook:
        """An independent book with the same seats taken (the layout is shared: it never changes)."""
        other = SeatBook.__new__(SeatBook)
        other.map, other._seats, other._row_of = self.map, self._seats, self._row_of
        other.taken, other._free = set(self.taken), dict(self._free)
        return other

    def section_view(self, section: str) -> dict[str, object]:
        """What a client shows of one section: its taken seats and what is free of each type."""
        free: dict[str, int] = {}
        for i, row in enumerate(self.map.rows):
            if row.section == section:
                for (ri, type_id), n in self._free.items():
                    if ri == i:
                        free[type_id] = free.get(type_id, 0) + n
        taken = sorted(s for s in self.taken if self.map.section_of(s) == section)
        return {"taken": taken, "free": free, "blocked": sorted(b for b in self.map.blocked
                                                                if self.map.section_of(b) == section)}

    def taken_by_section(self) -> dict[str, int]:
        out = {section.id: 0 for section in self.map.sections}
        for s in self.taken:
            out[self.map.section_of(s)] += 1
        return out


def seats_by_type(seats: Iterable[Seat]) -> dict[str, list[Seat]]:
    out: dict[str, list[Seat]] = {}
    for s in seats:
        out.setdefault(s.type_id, []).append(s)
    return out


def seat_map_from_json(data: object) -> SeatMap:
    """A seat map from its JSON form (the CLI's ``--seats`` file, the API's ``seats`` field, the
    stored document)::

        {"sections": [{"id": "stalls", "name": "Stalls", "rows": [
            {"id": "A", "first": 1, "last": 20, "type": "stalls", "missing": [11],
             "types": {"vip": [9, 10]}}]}],
         "blocked": ["stalls:A:1"]}

    Sections and rows are listed best first (see the module's rule). Raises ``InvalidSeatMap``
    for a malformed document and everything ``new_seat_map`` raises.
    """
    try:
        doc = _mapping(data, "the seat map", {"sections", "blocked"})
        sections = []
        for sec in _list(doc.get("sections"), "sections"):
            sec = _mapping(sec, "a section", {"id", "name", "rows"})
            rows = []
            for row in _list(sec.get("rows"), f"rows of section {sec.get('id')!r}"):
                row = _mapping(row, "a row", {"id", "first", "last", "type", "missing", "types"})
                types = _mapping(row.get("types") or {}, "types of a row", None)
                rows.append(RowSpec(
                    id=_text(row.get("id"), "row id"), first=_int(row.get("first", 1), "first"),
                    last=_int(row.get("last"), "last"), type_id=_text(row.get("type"), "row type"),
                    missing=tuple(_int(n, "missing seat") for n in _list(row.get("missing") or [], "missing")),
                    types={_text(t, "type"): tuple(_int(n, "seat number") for n in _list(nums, "seat numbers"))
                           for t, nums in types.items()},
                ))
            sections.append(SectionSpec(_text(sec.get("id"), "section id"), tuple(rows),
                                        str(sec.get("name") or "")))
        blocked = [_text(b, "blocked seat") for b in _list(doc.get("blocked") or [], "blocked")]
    except _Malformed as exc:
        raise InvalidSeatMap(f"invalid seat map: {exc}") from None
    return new_seat_map(sections, blocked)


def seat_map_to_json(seat_map: SeatMap) -> dict[str, object]:
    """The compact form ``seat_map_from_json`` reads (rows as first..last, not one entry a seat)."""
    return {
        "sections": [{"id": sec.id, "name": sec.name, "rows": [
            {"id": r.id, "first": r.first, "last": r.last, "type": r.type_id, "missing": list(r.missing),
             "types": {t: list(nums) for t, nums in r.types.items()}} for r in sec.rows]}
            for sec in seat_map.sections],
        "blocked": sorted(seat_map.blocked),
    }


class _Malformed(ValueError):
    pass


def _mapping(value: object, what: str, allowed: set[str] | None) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} must be an object")
    if allowed is not None and set(value) - allowed:
        raise _Malformed(f"{what} has unknown fields: {sorted(set(value) - allowed)}")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise _Malformed(f"{what} must be a list")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{what} must be a non-empty string")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{what} must be a whole number, got {value!r}")
    return value


"""`boxoffice events create --types FILE --seats FILE`, as an organiser runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli import run

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
BASE = ("events", "create", "--name", "Play", "--venue", "Theatre", "--starts-at", "2030-05-01T19:30:00+01:00",
        "--per-order-max", "6")


def test_an_event_is_created_from_the_example_types_and_seat_map_files(stack, db):
    created = run(stack, *BASE, "--types", str(EXAMPLES / "theatre-types.json"),
                  "--seats", str(EXAMPLES / "theatre-seats.json"), "--json")
    assert created.returncode == 0, created.stderr
    event = json.loads(created.stdout)
    # stalls: 19 + 19 + 21 seats (aisles), less 2 blocked, plus 2 in the circle's row E; circle 16 + 14
    assert event["capacity"] == (59 - 2 + 2) + 30 + 200 and event["seated"]
    shown = json.loads(run(stack, "events", "show", event["id"], "--json").stdout)
    assert shown["availability"]["available"] == 289 and shown["availability"]["live"]
    assert shown["availability"]["types"]["early"]["available"] == 50
    assert shown["availability"]["types"]["standing"]["available"] == 200

    bought = run(stack, "buy", event["id"], "--user", "ann", "--type", "stalls=2", "--type", "early=1", "--json")
    assert bought.returncode == 0, bought.stdout + bought.stderr
    lines = json.loads(bought.stdout)["order"]["lines"]
    # Row A: seats 2..19 (1 and 20 blocked, no 11): the pair nearest the middle (10.5) is 9-10.
    assert [(ln["type_id"], ln["seat_ids"]) for ln in lines] == [("stalls", ["stalls:A:9", "stalls:A:10"]),
                                                                   ("early", [])]
    taken = run(stack, "buy", event["id"], "--user", "bob", "--seat", "stalls:A:10", "--json")
    assert taken.returncode == 4 and json.loads(taken.stdout)["error"] == "seat_unavailable"


def test_a_types_file_that_contradicts_the_seat_map_exits_2_and_writes_nothing(stack, db, tmp_path):
    types = json.loads((EXAMPLES / "theatre-types.json").read_text())
    types["types"] = [t for t in types["types"] if t["id"] != "circle"]  # the circle's seats name it
    bad = tmp_path / "types.json"
    bad.write_text(json.dumps(types))
    refused = run(stack, *BASE, "--types", str(bad), "--seats", str(EXAMPLES / "theatre-seats.json"), "--json")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["error"] == "unknown_ticket_type"
    not_json = tmp_path / "seats.json"
    not_json.write_text("{sections")
    refused = run(stack, *BASE, "--types", str(EXAMPLES / "theatre-types.json"), "--seats", str(not_json), "--json")
    assert refused.returncode == 2 and "not a readable JSON file" in refused.stdout
    assert list(db.collection("events").limit(1).stream()) == []


def test_holding_a_seat_and_cancelling_by_type_from_the_cli(stack, db):
    created = run(stack, *BASE, "--types", str(EXAMPLES / "theatre-types.json"),
                  "--seats", str(EXAMPLES / "theatre-seats.json"), "--json")
    event = json.loads(created.stdout)
    held = run(stack, "hold", event["id"], "--user", "ann", "--seat", "stalls:B:7", "--ttl", "300", "--json")
    assert held.returncode == 0, held.stdout + held.stderr
    assert json.loads(held.stdout)["hold"]["lines"][0]["seat_ids"] == ["stalls:B:7"]
    taken = run(stack, "hold", event["id"], "--user", "bob", "--seat", "stalls:B:7", "--json")
    assert taken.returncode == 4 and json.loads(taken.stdout)["error"] == "seat_unavailable"

    bought = run(stack, "buy", event["id"], "--user", "bob", "--type", "stalls=2", "--type", "early=1", "--json")
    order = json.loads(bought.stdout)["order"]
    wrong = run(stack, "cancel", order["id"], "--user", "bob", "--type", "circle=1", "--json")
    assert wrong.returncode == 2 and "no tickets of type 'circle'" in wrong.stdout
    cancelled = run(stack, "cancel", order["id"], "--user", "bob", "--type", "early=1", "--json")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert json.loads(cancelled.stdout)["order"]["cancelled_quantity"] == 1

"""`boxoffice simulate --via-api`: the flash sale through the HTTP API (a uvicorn process of its
own, the Auth emulator, minted ID tokens) keeps the library's guarantees, and the comparison
with the library runs both in one command."""

from __future__ import annotations

import json

from boxoffice.loadtest.simulator import Answer, SimulationConfig
from boxoffice.store.documents import order_ref


def test_a_sale_through_the_api_sells_exactly_the_tickets(stack, auth_emulator, db):
    from boxoffice.loadtest.via_api import ApiTarget, _healthy, run_via_api, running_api_server

    config = SimulationConfig(buyers=100, tickets=30, concurrency=50, seed=5, instances=1)
    with running_api_server(stack.firestore_host, auth_emulator.host, stack.project) as url:
        result = run_via_api(db, config, ApiTarget(url, auth_emulator.host, stack.project))
    assert not _healthy(url), "the API server must be stopped after the run"
    report = result.report()
    assert report["tickets_sold"] == 30 and report["orders_confirmed"] == 30
    assert report["sold_out"] == 70
    assert report["errors"] == 0 and report["refused"] == 0, report["errors_by_kind"]
    assert report["oversold"] == 0
    assert report["audit"]["ok"], report["audit"]["problems"]
    # The orders belong to the minted users (the token's uid), as the ledger said.
    sold = [r for r in result.results if r.answer is Answer.SOLD]
    users = {order_ref(db, r.order_id).get().to_dict()["user_id"] for r in sold}
    assert len(users) == 30 and all(u.startswith("api-") for u in users)


def test_simulate_via_api_compares_with_the_library_in_one_command(stack, auth_emulator, db, tmp_path):
    from typer.testing import CliRunner

    from boxoffice.cli import app

    path = tmp_path / "via-api.json"
    r = CliRunner().invoke(app, ["simulate", "--via-api", "--compare-library", "--buyers", "60", "--tickets", "20",
                                 "--concurrency", "30", "--seed", "7", "--project", stack.project,
                                 "--json", str(path)])
    assert r.exit_code == 0, r.output
    figures = json.loads(path.read_text())
    side = figures["side_by_side"]
    assert list(side) == ["library", "api"]
    for run in side.values():
        assert run["sold"] == 20 and run["sold_out"] == 40 and run["errors"] == 0 and run["audit_ok"]
        assert run["answers_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
    assert figures["library"]["event_id"] != figures["api"]["event_id"]
    assert figures["setup"]["api_workers"] == 1 and figures["setup"]["instances"] == 1
    overhead = figures["overhead"]
    assert overhead["p99_ratio"] == round(side["api"]["p99_ms"] / side["library"]["p99_ms"], 2)
    assert overhead["rps_ratio"] == round(side["library"]["answers_per_s"] / side["api"]["answers_per_s"], 2)
    assert "overhead of the API layer" in r.output

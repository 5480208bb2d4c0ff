"""A queued request's place, estimated from the allocator's progress (domain/queue_progress.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from boxoffice.domain.queue_progress import (
    NEXT,
    QUEUED,
    WAITING,
    QueueMeter,
    QueueProgress,
    backlog,
    place_in_queue,
    progress_from_doc,
)

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def steady_meter() -> QueueMeter:
    """Requests arrived 20 a second from t=0; the allocator answered those of t=0..4 in batches,
    100 answers over 5 s of its time: it is answering at 20/s, the arrivals of 4 s ago."""
    meter = QueueMeter(since=at(3))
    for k in range(5):
        arrivals = [at(k + i / 20) for i in range(20)]
        meter = meter.with_batch(at(4 + k), arrivals)
    return meter


def test_a_request_behind_a_steady_queue_has_arrivals_times_density_ahead_and_an_eta_at_the_answer_rate():
    progress = steady_meter().progress(at(8))
    assert progress.answered_through == at(4.95)
    assert progress.answers_per_s == 100 / 5
    assert abs((progress.arrivals_per_s or 0) - 100 / 4.95) < 1e-9
    place = place_in_queue(at(7.95), progress, now=at(8.5))
    assert place.state == QUEUED
    assert place.ahead == round(3.0 * 100 / 4.95)  # 3 s of arrivals at ~20/s: 61
    assert place.eta_s == round(place.ahead / 20, 1)
    assert place.queued_s == 0.55
    assert place.answering_arrivals_of == at(4.95)


def test_the_place_shrinks_as_the_allocator_answers_what_arrived_before():
    meter = steady_meter()
    mine = at(7.95)
    before = place_in_queue(mine, meter.progress(at(8)), now=at(8)).ahead
    meter = meter.with_batch(at(9), [at(5 + i / 20) for i in range(20)])
    after = place_in_queue(mine, meter.progress(at(9)), now=at(9)).ahead
    assert before is not None and after is not None and 0 < after < before


def test_a_request_that_arrived_before_the_latest_answer_or_the_last_empty_look_is_next():
    progress = steady_meter().progress(at(8))
    assert place_in_queue(at(4.9), progress, now=at(8)).state == NEXT
    assert place_in_queue(at(4.9), progress, now=at(8)).ahead == 0
    drained = steady_meter().drained(at(9)).progress(at(9))
    place = place_in_queue(at(8.5), drained, now=at(9.2))
    assert (place.state, place.ahead, place.eta_s) == (NEXT, 0, 0.0)


def test_without_an_allocator_holding_the_queue_the_request_waits_and_no_number_is_made_up():
    place = place_in_queue(at(1), None, now=at(3))
    assert (place.state, place.ahead, place.eta_s, place.queued_s) == (WAITING, None, None, 2.0)
    stale = QueueProgress(as_of=at(0), answered_through=at(0), drained_at=None, answers_per_s=50,
                          arrivals_per_s=50, live=False)
    assert place_in_queue(at(1), stale, now=at(3)).state == WAITING
    assert backlog(stale, at(3)) == (None, None)


def test_answers_from_an_instant_of_a_burst_give_no_density_until_they_span_a_quarter_second():
    meter = QueueMeter(since=at(0)).with_batch(at(1), [at(0.5 + i / 10_000) for i in range(100)])
    progress = meter.progress(at(1))
    assert progress.arrivals_per_s is None  # not 100 / 0.0099 s, nor a guess from a floor
    place = place_in_queue(at(5), progress, now=at(5))
    assert (place.state, place.ahead) == (QUEUED, None)
    meter = meter.with_batch(at(2), [at(0.75 + i / 100) for i in range(5)])
    assert meter.progress(at(2)).arrivals_per_s == 105 / 0.29


def test_one_answer_says_nothing_of_the_arrivals_density():
    progress = QueueMeter(since=at(0)).with_batch(at(1), [at(0.5)]).progress(at(1))
    assert progress.arrivals_per_s is None
    place = place_in_queue(at(2), progress, now=at(2))
    assert (place.state, place.ahead, place.eta_s) == (QUEUED, None, None)


def test_answers_older_than_the_window_no_longer_make_the_pace():
    progress = steady_meter().progress(at(30))
    assert progress.answers_per_s == 0 and progress.arrivals_per_s is None
    assert progress.answered_through == at(4.95)  # what was answered stays answered


def test_a_new_holder_measures_its_rate_over_the_time_it_has_held_the_lease():
    meter = QueueMeter(since=at(0)).with_batch(at(2), [at(0.1 * i) for i in range(60)])
    assert meter.progress(at(2)).answers_per_s == 30.0
    assert meter.progress(at(0.5)).answers_per_s == 60.0  # never divided by less than a second


def test_a_batch_of_redeliveries_never_moves_answered_through_back():
    meter = steady_meter().with_batch(at(10), [at(1), at(2)])
    assert meter.answered_through == at(4.95)
    assert meter.with_batch(at(11), []) is meter


def test_the_dashboard_backlog_is_the_place_of_a_request_arriving_now_and_the_oldest_wait():
    progress = steady_meter().progress(at(8))
    ahead, lag = backlog(progress, at(8))
    assert ahead == round((8 - 4.95) * 100 / 4.95)
    assert lag == 3.0  # rounded to 0.1 s: 8 - 4.95 = 3.05
    assert backlog(steady_meter().drained(at(9)).progress(at(9)), at(9)) == (0, 0.0)


def test_progress_survives_its_document_form():
    progress = steady_meter().drained(at(9)).progress(at(9))
    again = progress_from_doc(progress.as_doc(), live=True)
    assert again.answered_through == progress.answered_through
    assert again.drained_at == progress.drained_at
    assert abs(again.answers_per_s - progress.answers_per_s) < 1e-3
    assert again.arrivals_per_s is not None and abs(again.arrivals_per_s - (progress.arrivals_per_s or 0)) < 1e-3

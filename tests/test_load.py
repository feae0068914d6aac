"""labkit.load against a real MLServer: limits, errors, percentiles, event loops, loopback only."""

import _thread
import asyncio
import json
import threading
import time

import numpy as np
import pytest

from labkit import load
from labkit.checks.lab03 import write_model
from labkit.client import InferenceServerError
from labkit.serving import Server

PROTOCOLS = ["rest", "grpc"]


@pytest.fixture(scope="module")
def server(sklearn_repo):
    with Server(sklearn_repo, settings={"parallel_workers": 0}) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory, classifier):
    """A model whose every request waits a whole second for a batch that never fills."""
    root = tmp_path_factory.mktemp("slow")
    write_model(root / "slow", classifier, max_batch_size=64, max_batch_time=1.0)
    with Server(root, settings={"parallel_workers": 0}) as server:
        yield server


@pytest.fixture(scope="module")
def rows(dataset):
    return dataset.X.values


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stops_at_the_request_count(server, rows, protocol):
    result = load.run(server, "cancer", rows[:1], protocol, concurrency=4, requests=40, duration=30, progress=False)
    assert result.stopped_by == "requests"
    assert len(result.samples) == result.ok == 40
    assert result.errors == {} and result.cut_off == 0
    assert (result.latencies > 0).all()
    assert result.throughput == pytest.approx(40 / result.elapsed)
    assert result.elapsed < 30


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrency_is_real_and_bounded(server, rows, protocol):
    result = load.run(server, "cancer", rows[:1], protocol, concurrency=4, requests=80, progress=False)
    assert 2 <= _most_in_flight(result.samples) <= 4


def test_stops_at_the_time_limit_and_cuts_off_requests_in_flight(slow_server, rows):
    started = time.perf_counter()
    result = load.run(slow_server, "slow", rows[:1], concurrency=3, requests=None, duration=0.3, warmup=0,
                      progress=False)
    assert time.perf_counter() - started < 0.9, "the requests in flight were waited for"
    assert result.stopped_by == "duration"
    assert result.elapsed == pytest.approx(0.3)
    assert result.samples == [] and result.cut_off == 3
    assert np.isnan(result.p99) and result.throughput == 0


def test_a_request_slower_than_the_timeout_is_an_error_of_its_own_kind(slow_server, rows):
    result = load.run(slow_server, "slow", rows[:1], "grpc", concurrency=2, requests=2, warmup=0, timeout=0.2,
                      progress=False)
    assert result.errors == {"timeout": 2}
    assert result.ok == 0


@pytest.mark.parametrize("protocol, kind", [("rest", "HTTP 500"), ("grpc", "gRPC INTERNAL")])
def test_failures_are_counted_by_kind_with_the_servers_reason(server, rows, protocol, kind):
    good, bad = rows[:1], rows[:1, :5]  # 5 features instead of 30: scikit-learn raises in the server
    result = load.run(server, "cancer", [good, bad], protocol, concurrency=2, requests=20, progress=False)
    assert len(result.samples) == 20
    assert result.errors[kind] >= 1 and "features" in result.error_reasons[kind]
    # After a 500, uvicorn may close the connection that a request of the other client was about to use.
    assert set(result.errors) <= {kind, "ReadError", "RemoteProtocolError"}
    assert result.ok <= 10 <= sum(result.errors.values())
    assert result.latencies.size == result.ok, "failed requests are no latencies"


@pytest.mark.parametrize("protocol, status", [("rest", 404), ("grpc", "NOT_FOUND")])
def test_a_refused_first_request_raises_instead_of_measuring_failures(server, rows, protocol, status):
    with pytest.raises(InferenceServerError) as caught:
        load.run(server, "no-such-model", rows[:1], protocol, progress=False)
    assert caught.value.status == status


def test_runs_where_an_event_loop_is_already_running(server, rows):
    async def notebook_cell():
        return load.run(server, "cancer", rows[:1], "grpc", concurrency=2, requests=10, progress=False)

    assert asyncio.run(notebook_cell()).ok == 10


def test_an_interrupt_ends_the_load_and_keeps_what_was_measured(slow_server, rows):
    threading.Timer(0.5, _thread.interrupt_main).start()  # what Jupyter's stop button does
    result = load.run(slow_server, "slow", rows[:1], concurrency=2, requests=None, duration=20, warmup=0,
                      progress=False)
    assert result.stopped_by == "interrupted"
    assert result.elapsed < 5


def test_percentiles_and_summary(server, rows):
    result = load.run(server, "cancer", rows[:3], concurrency=2, requests=50, progress=True)
    latencies = result.latencies
    assert result.p50 == pytest.approx(np.percentile(latencies, 50))
    assert result.p99 == pytest.approx(np.percentile(latencies, 99))
    assert result.p50 <= result.p90 <= result.p99 <= result.max == latencies.max()
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["ok"] == 50 and summary["p99_ms"] == pytest.approx(1000 * result.p99, abs=0.01)
    assert "50 ok" in str(result)


def _most_in_flight(samples):
    """The most requests in flight at one moment, from the samples' own send and answer times."""
    events = sorted([(s.start, 1) for s in samples] + [(s.start + s.latency, -1) for s in samples],
                    key=lambda e: (e[0], e[1]))
    return int(np.cumsum([delta for _, delta in events]).max())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_open_loop_sends_on_a_fixed_schedule_until_the_count(server, rows, protocol):
    result = load.run(server, "cancer", rows[:1], protocol, rate=100, concurrency=16, requests=30, duration=10,
                      progress=False)
    assert result.stopped_by == "requests" and result.ok == 30 and result.cut_off == 0
    assert result.rate == 100 and result.summary()["offered_rps"] == 100
    # Each request is timed from when it was due: 0, 10 ms, 20 ms, ... whatever the answers.
    assert sorted(s.start for s in result.samples) == pytest.approx([i / 100 for i in range(30)])
    assert result.elapsed >= 29 / 100, "the last request cannot be answered before it is due"
    assert "open loop at 100 req/s" in str(result)


def test_an_open_loop_does_not_wait_for_answers(slow_server, rows):
    # Every request waits a whole second for a batch that never fills: a closed loop of one client would send one
    # request in that time; the open loop sends all ten, and they wait together.
    result = load.run(slow_server, "slow", rows[:1], rate=20, concurrency=64, requests=10, duration=5, warmup=0,
                      progress=False)
    assert result.ok == 10
    assert _most_in_flight(result.samples) >= 5
    closed = load.run(slow_server, "slow", rows[:1], concurrency=1, requests=2, duration=5, warmup=0,
                      progress=False)
    assert _most_in_flight(closed.samples) == 1


def test_an_open_loop_counts_the_wait_for_a_free_slot_in_the_latency(slow_server, rows):
    # Two slots, six requests due within 50 ms, one second per batch of two: the last two can only be sent when the
    # second batch has answered, so they are answered at least two seconds after they were due. A closed loop
    # (or a timer started at the send) would report about one second for every request: coordinated omission.
    result = load.run(slow_server, "slow", rows[:1], rate=100, concurrency=2, requests=6, duration=10, warmup=0,
                      progress=False)
    assert result.ok == 6
    assert _most_in_flight(result.samples) >= 3, "requests waiting for a slot count as waiting"
    by_due = [s.latency for s in sorted(result.samples, key=lambda s: s.start)]
    assert min(by_due[-2:]) >= 2.0
    assert max(by_due[:2]) < 2.0


def test_an_open_loop_stops_at_the_time_limit_and_cuts_off_what_is_unanswered(slow_server, rows):
    started = time.perf_counter()
    result = load.run(slow_server, "slow", rows[:1], rate=20, concurrency=64, requests=None, duration=0.3,
                      warmup=0, progress=False)
    assert time.perf_counter() - started < 0.9, "the requests in flight were waited for"
    assert result.stopped_by == "duration" and result.elapsed == pytest.approx(0.3)
    assert result.samples == [] and result.cut_off == 6  # due at 0, 50, ..., 250 ms
    assert "6 cut off" in str(result)


@pytest.mark.parametrize("target, protocol", [("http://10.1.2.3:8080", "rest"), ("http://example.com", "rest"),
                                              ("192.168.1.5:8081", "grpc"), ("example.com:8081", "grpc")])
def test_traffic_goes_to_loopback_only(rows, target, protocol):
    with pytest.raises(ValueError, match="this machine only"):
        load.run(target, "cancer", rows[:1], protocol, requests=1, progress=False)


@pytest.mark.parametrize("arguments, words", [
    ({"requests": None, "duration": None}, "unbounded"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 10_000}, "concurrency"),
    ({"duration": 10_000}, "duration"),
    ({"requests": 0}, "requests"),
    ({"protocol": "http"}, "protocol"),
    ({"warmup": -1}, "warmup"),
    ({"rate": 0}, "rate"),
    ({"rate": -5}, "rate"),
    ({"rate": 1e9}, "rate"),
    ({"rate": "fast"}, "rate"),
])
def test_bad_arguments_are_refused_before_anything_is_sent(rows, arguments, words):
    with pytest.raises(ValueError, match=words):
        load.run("http://127.0.0.1:9", "cancer", rows[:1], **arguments, progress=False)

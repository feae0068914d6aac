"""labkit.metrics: the arithmetic on known text, then a real MLServer's metrics before and after real traffic."""

import json
import math

import numpy as np
import pytest

from labkit import load, metrics
from labkit.checks.lab03 import write_model
from labkit.serving import Server

TEXT = """\
# HELP requests_total Requests.
# TYPE requests_total counter
requests_total{model="a",code="200"} 10
requests_total{model="a",code="500"} 2
requests_total{model="b",code="200"} 5
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{model="a",le="0.1"} 2
latency_seconds_bucket{model="a",le="0.2"} 6
latency_seconds_bucket{model="a",le="0.4"} 10
latency_seconds_bucket{model="a",le="+Inf"} 10
latency_seconds_count{model="a"} 10
latency_seconds_sum{model="a"} 2.0
latency_seconds_bucket{model="b",le="0.1"} 0
latency_seconds_bucket{model="b",le="0.2"} 0
latency_seconds_bucket{model="b",le="0.4"} 0
latency_seconds_bucket{model="b",le="+Inf"} 4
latency_seconds_count{model="b"} 4
latency_seconds_sum{model="b"} 9.0
"""


def test_values_are_summed_over_the_labels_not_given():
    scrape = metrics.parse(TEXT, at=0)
    assert scrape.value("requests_total") == 17
    assert scrape.value("requests_total", model="a") == 12
    assert scrape.value("requests_total", model="a", code="500") == 2
    assert scrape.value("requests_total", model="zzz") == 0
    assert scrape.types == {"requests": "counter", "latency_seconds": "histogram"}
    bounds, counts = scrape.buckets("latency_seconds")
    assert bounds.tolist() == [0.1, 0.2, 0.4, math.inf]
    assert counts.tolist() == [2, 6, 10, 14]


def test_rates_between_scrapes_and_a_restart():
    before, after = metrics.parse(TEXT, at=10), metrics.parse(TEXT.replace("} 10\n", "} 30\n", 1), at=14)
    assert metrics.increase(before, after, "requests_total", model="a", code="200") == 20
    assert metrics.rate(before, after, "requests_total", model="a") == pytest.approx(5.0)
    restarted = metrics.parse(TEXT.replace("} 10\n", "} 3\n", 1), at=20)
    assert metrics.increase(before, restarted, "requests_total", code="200", model="a") == 3
    with pytest.raises(ValueError, match="later"):
        metrics.rate(after, before, "requests_total")


@pytest.mark.parametrize("q, expected", [(0.1, 0.05), (0.2, 0.1), (0.4, 0.15), (0.6, 0.2), (0.8, 0.3), (1.0, 0.4)])
def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does(q, expected):
    assert metrics.histogram_quantile(q, [0.1, 0.2, 0.4, math.inf], [2, 6, 10, 10]) == pytest.approx(expected)


def test_histogram_quantile_edge_cases():
    bounds = [0.1, 0.2, 0.4, math.inf]
    assert metrics.histogram_quantile(0.99, bounds, [0, 0, 0, 4]) == 0.4, "in the +Inf bucket: highest finite bound"
    assert math.isnan(metrics.histogram_quantile(0.5, bounds, [0, 0, 0, 0]))
    with pytest.raises(ValueError):
        metrics.histogram_quantile(50, bounds, [1, 2, 3, 4])
    # Many observations of known values: the estimate lands inside the right bucket.
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 0.4, size=10_000)
    counts = [(values <= b).sum() for b in bounds]
    assert metrics.histogram_quantile(0.5, bounds, counts) == pytest.approx(np.quantile(values, 0.5), abs=0.01)


@pytest.fixture(scope="module")
def server(tmp_path_factory, classifier):
    """One worker (MLServer exports queue and custom metrics from workers only), a batched lab runtime."""
    root = tmp_path_factory.mktemp("metrics")
    write_model(root / "batched", classifier, max_batch_size=8, max_batch_time=0.05)
    write_model(root / "plain", classifier)
    with Server(root, settings={"parallel_workers": 1}) as server:
        yield server


def test_counts_and_latencies_of_real_traffic(server, dataset):
    rows = dataset.X.values
    before = metrics.scrape(server)
    result = load.run(server, "plain", rows[:1], concurrency=2, requests=30, warmup=0, progress=False)
    after = metrics.scrape(server)
    assert result.ok == 30
    assert metrics.increase(before, after, "model_infer_request_success_total", model="plain") == 30
    assert metrics.increase(before, after, "rest_server_requests_total", path="/v2/models/{model_name}/infer",
                            status_code="200") == 30
    infer = {"path": "/v2/models/{model_name}/infer"}
    bounds, counts = metrics.bucket_increase(before, after, "rest_server_request_duration_seconds", **infer)
    assert counts[-1] == 30 and math.isinf(bounds[-1])
    p50 = metrics.quantile(before, after, "rest_server_request_duration_seconds", 0.5, **infer)
    assert 0 < p50 <= 2 * result.p99, "the server's median lies within what the client saw"
    assert metrics.rate(before, after, "model_infer_request_success_total") > 0


def test_the_runtimes_custom_metric_shows_that_requests_were_batched(server, dataset):
    rows = dataset.X.values
    before = metrics.scrape(server)
    load.run(server, "batched", rows[:1], concurrency=8, requests=40, warmup=0, progress=False)
    load.run(server, "plain", rows[:1], concurrency=8, requests=40, warmup=0, progress=False)
    after = metrics.scrape(server)
    batched_calls = metrics.increase(before, after, "batch_rows_count", model_name="batched")
    assert metrics.increase(before, after, "batch_rows_sum", model_name="batched") == 40, "every row counted once"
    assert batched_calls < 40, "some requests shared a call"
    assert metrics.increase(before, after, "batch_rows_count", model_name="plain") == 40, "no batching: 1 per call"
    assert metrics.increase(before, after, "batch_request_queue_count", model_name="batched") == 40


def test_recorder_scrapes_in_the_background_and_gives_plain_series(server, dataset):
    with metrics.Recorder(server, interval=0.1) as recorder:
        load.run(server, "plain", dataset.X.values[:1], concurrency=2, duration=0.6, warmup=0, progress=False)
    assert len(recorder.scrapes) >= 4 and recorder.error is None
    times = [s.time for s in recorder.scrapes]
    assert times == sorted(times)
    series = metrics.histogram_series(recorder.scrapes, "rest_server_request_duration_seconds",
                                      path="/v2/models/{model_name}/infer")
    assert json.loads(json.dumps(series, default=str)) and series[0]["time"] == 0
    assert all(len(s["le"]) == len(s["count"]) for s in series)
    assert series[-1]["count"][-1] > series[0]["count"][-1]


def test_plots_draw_one_step_per_interval(server):
    import matplotlib

    matplotlib.use("Agg")
    scrapes = [metrics.scrape(server) for _ in range(3)]
    ax = metrics.plot_rate(scrapes, "model_infer_request_success_total")
    assert len(ax.lines[0].get_xdata()) == 2
    ax = metrics.plot_quantiles(scrapes, "rest_server_request_duration_seconds", qs=(0.5, 0.9))
    assert len(ax.lines) == 2

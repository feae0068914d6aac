"""Read MLServer's Prometheus metrics: scrape, compare two scrapes, plot.

    >>> from labkit import metrics                                   # doctest: +SKIP
    >>> before = metrics.scrape(server)
    >>> ...                                                           # send traffic
    >>> after = metrics.scrape(server)
    >>> metrics.rate(before, after, "model_infer_request_success_total", model="cancer")
    >>> metrics.quantile(before, after, "rest_server_request_duration_seconds", 0.99)

Counters and histograms only ever grow, so what happened in an interval is the difference of two scrapes, as
Prometheus's ``rate()`` and ``histogram_quantile()`` compute it; a counter that went down means the server
restarted, and then the later value is the whole increase. The text format is parsed by ``prometheus_client``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    """One reading of a metrics endpoint: ``time`` (``time.monotonic()``) and every sample."""

    time: float
    samples: list  # prometheus_client Sample(name, labels, value, ...)
    types: dict[str, str]  # family name -> "counter", "histogram", "gauge", "summary", ...

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (0.0 if there are none)."""
        return float(sum(s.value for s in self._matching(name, labels)))

    def names(self) -> list[str]:
        """The sample names in this scrape, e.g. ``model_infer_request_success_total``."""
        return sorted({s.name for s in self.samples})

    def buckets(self, name: str, **labels: str) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds and cumulative counts of the histogram ``name`` (summed over labels not given)."""
        totals: dict[float, float] = {}
        for s in self._matching(f"{name}_bucket", labels):
            bound = float(s.labels["le"])
            totals[bound] = totals.get(bound, 0.0) + s.value
        bounds = np.array(sorted(totals), dtype=float)
        return bounds, np.array([totals[b] for b in bounds], dtype=float)

    def _matching(self, name: str, labels: dict):
        labels = {k: str(v) for k, v in labels.items()}
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]


def parse(text: str, at: float | None = None) -> Scrape:
    """A ``Scrape`` from Prometheus text exposition format."""
    samples, types = [], {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples.extend(family.samples)
    return Scrape(time.monotonic() if at is None else at, samples, types)


def scrape(target: Any, timeout: float = 5) -> Scrape:
    """Read the metrics of a ``labkit.serving.Server`` (or of a metrics URL) now."""
    url = target.metrics_url if hasattr(target, "metrics_url") else str(target)
    reply = httpx.get(url, timeout=timeout, trust_env=False)
    reply.raise_for_status()
    return parse(reply.text)


def increase(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much the counter ``name`` grew between two scrapes (a drop means a restart: then the later value)."""
    first, last = before.value(name, **labels), after.value(name, **labels)
    return last - first if last >= first else last


def rate(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """Per-second increase of the counter ``name`` between two scrapes."""
    seconds = after.time - before.time
    if seconds <= 0:
        raise ValueError("the second scrape must be later than the first")
    return increase(before, after, name, **labels) / seconds


def bucket_increase(before: Scrape, after: Scrape, name: str, **labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds and cumulative counts of the observations of histogram ``name`` made between two scrapes."""
    bounds, last = after.buckets(name, **labels)
    first_bounds, first = before.buckets(name, **labels)
    if len(first) != len(last) or not np.array_equal(first_bounds, bounds) or (last < first).any():
        return bounds, last  # the histogram is new, or the server restarted
    return bounds, last - first


def histogram_quantile(q: float, bounds, counts) -> float:
    """The ``q``-quantile (0-1) of a histogram, interpolated linearly inside its bucket as Prometheus does.

    ``bounds`` are the buckets' upper bounds (ending with ``inf``), ``counts`` the cumulative counts. NaN when
    the histogram is empty; the highest finite bound when the quantile falls into the ``+Inf`` bucket.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q is a fraction from 0 to 1, not {q!r}")
    bounds, counts = np.asarray(bounds, dtype=float), np.asarray(counts, dtype=float)
    if counts.size == 0 or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    i = int(np.searchsorted(counts, rank, side="left"))
    i = min(i, len(counts) - 1)
    if math.isinf(bounds[i]):
        return float(bounds[-2]) if len(bounds) > 1 else float("nan")
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return float(bounds[i])
    return float(lower + (bounds[i] - lower) * (rank - below) / in_bucket)


def quantile(before: Scrape, after: Scrape, name: str, q: float, **labels: str) -> float:
    """The ``q``-quantile (0-1) of the histogram ``name`` over the observations made between two scrapes."""
    return histogram_quantile(q, *bucket_increase(before, after, name, **labels))


def histogram_series(scrapes: list[Scrape], name: str, **labels: str) -> list[dict]:
    """Plain data of a histogram over time: ``[{"time": s, "le": [bounds], "count": [cumulative]}, ...]``."""
    t0 = scrapes[0].time if scrapes else 0.0
    series = []
    for s in scrapes:
        bounds, counts = s.buckets(name, **labels)
        series.append({"time": s.time - t0, "le": bounds.tolist(), "count": counts.tolist()})
    return series


class Recorder:
    """Scrape a server every ``interval`` seconds in the background, for at most ``limit`` seconds.

    >>> with metrics.Recorder(server, interval=0.5) as recorder:     # doctest: +SKIP
    ...     load.run(server, "cancer", X[:1], duration=3)
    >>> recorder.scrapes
    """

    def __init__(self, target: Any, interval: float = 0.5, limit: float = 120):
        if interval < 0.05:
            raise ValueError("scrape at most every 0.05 s: each scrape costs the server work too")
        self.target, self.interval, self.limit = target, interval, limit
        self.scrapes: list[Scrape] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-metrics", daemon=True)
        self.error: Exception | None = None

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while True:
            try:
                self.scrapes.append(scrape(self.target))
            except (httpx.HTTPError, ValueError) as e:  # the server went away: keep what was read
                self.error = e
                return
            if self._stop.wait(self.interval) or time.monotonic() > deadline:
                return

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.scrapes.append(scrape(self.target))  # one last reading after the traffic
        except (httpx.HTTPError, ValueError) as e:
            self.error = e


def _intervals(scrapes: list[Scrape]):
    return [(a, b) for a, b in zip(scrapes, scrapes[1:], strict=False) if b.time > a.time]


def plot_rate(scrapes: list[Scrape], name: str, ax=None, label: str | None = None, **labels: str):
    """Plot the per-second rate of counter ``name`` between consecutive scrapes; returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3))[1]
    t0 = scrapes[0].time
    pairs = _intervals(scrapes)
    ax.step([b.time - t0 for _, b in pairs], [rate(a, b, name, **labels) for a, b in pairs], where="pre",
            label=label or name)
    ax.set(xlabel="seconds", ylabel="per second")
    return ax


def plot_quantiles(scrapes: list[Scrape], name: str, qs=(0.5, 0.99), ax=None, **labels: str):
    """Plot quantiles of histogram ``name`` over each interval between consecutive scrapes; returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3))[1]
    t0 = scrapes[0].time
    pairs = _intervals(scrapes)
    for q in qs:
        ax.step([b.time - t0 for _, b in pairs], [quantile(a, b, name, q, **labels) for a, b in pairs],
                where="pre", label=f"p{q * 100:g}")
    ax.set(xlabel="seconds", ylabel=name)
    ax.legend()
    return ax

"""Serving figures for the scikit-learn model of lab 01, on this machine.

- start-to-ready: `Server.start()` until every model answers ready, with 0 and 1 parallel workers;
- latency of one-row requests, one at a time: in process (`model.predict`), over REST and over gRPC
  (MLServer's default of one parallel worker), p50 and p99, and their ratios to in-process;
- throughput at concurrency 32, without and with adaptive batching, the two servers measured alternately
  so that the machine's drift (other load, CPU boost) falls on both alike.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit import load
from labkit.client import Client
from labkit.data import load_breast_cancer
from labkit.serving import Server

MODEL = "cancer"
BATCHING = {"max_batch_size": 32, "max_batch_time": 0.01}


def model_repository(root: Path, model, **settings) -> Path:
    """A repository at ``root`` holding ``model`` as lab 01 serves it, plus extra model settings."""
    (root / MODEL).mkdir(parents=True)
    joblib.dump(model, root / MODEL / "model.joblib")
    settings = {"name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"}, **settings}
    (root / MODEL / "model-settings.json").write_text(json.dumps(settings))
    return root


def start_to_ready(repository: Path, workers: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        server = Server(repository, settings={"parallel_workers": workers})
        began = time.perf_counter()
        server.start()
        times.append(time.perf_counter() - began)
        server.stop()
    return statistics.median(times)


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def one_at_a_time(call, rows: np.ndarray, requests: int, warmup: int = 20) -> dict:
    for i in range(warmup):
        call(rows[i % len(rows)][None, :])
    seconds = []
    for i in range(requests):
        row = rows[i % len(rows)][None, :]
        began = time.perf_counter()
        call(row)
        seconds.append(time.perf_counter() - began)
    return percentiles(seconds)


def measure(rounds: int = 3, requests: int = 500, seconds: float = 3.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="labkit-bench-serving-") as tmp:
        data = load_breast_cancer()
        rows = data.X.values
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(rows, data.y.values)
        repository = model_repository(Path(tmp) / "plain", model)
        batched_repository = model_repository(Path(tmp) / "batched", model, **BATCHING)
        ready = {f"workers_{w}_s": round(start_to_ready(repository, w, rounds), 2) for w in (0, 1)}

        latency = {"in_process": one_at_a_time(model.predict, rows, requests)}
        with Server(repository, settings={"parallel_workers": 1}) as server:
            for protocol in ("rest", "grpc"):
                with Client(server, protocol) as client:
                    latency[protocol] = one_at_a_time(lambda row, c=client: c.infer(MODEL, row), rows, requests)
        for protocol in ("rest", "grpc"):
            for q in ("p50_ms", "p99_ms"):
                latency[protocol][f"{q[:3]}_x_in_process"] = round(latency[protocol][q] / latency["in_process"][q])

        throughput = {"plain": [], "batching": []}
        with Server(repository, settings={"parallel_workers": 1}) as plain, \
                Server(batched_repository, settings={"parallel_workers": 1}) as batched:
            for _ in range(rounds):
                for label, server in (("plain", plain), ("batching", batched)):
                    result = load.run(server, MODEL, rows[:1], concurrency=32, duration=seconds, requests=None,
                                      warmup=64, progress=False)
                    throughput[label].append(result.throughput)
    plain, batching = statistics.median(throughput["plain"]), statistics.median(throughput["batching"])
    return {
        "start_to_ready": ready,
        "latency_one_row": latency,
        "throughput_concurrency_32": {
            "plain_rps": round(plain, 1), "batching_rps": round(batching, 1),
            "batching_over_plain": round(batching / plain, 2), "batching_settings": BATCHING,
            "rounds": rounds, "seconds_each": seconds,
        },
        "requests": requests,
    }


def show(figures: dict) -> None:
    ready = figures["start_to_ready"]
    print(f"start-to-ready: {ready['workers_0_s']:.2f} s with 0 workers, {ready['workers_1_s']:.2f} s with 1")
    print(f"{'one-row latency':16} {'p50 ms':>8} {'p99 ms':>8} {'p50 ×':>7} {'p99 ×':>7}")
    for where, row in figures["latency_one_row"].items():
        ratios = f"{row['p50_x_in_process']:7d} {row['p99_x_in_process']:7d}" if "p50_x_in_process" in row else ""
        print(f"{where:16} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {ratios}")
    t = figures["throughput_concurrency_32"]
    print(f"throughput at concurrency 32: {t['plain_rps']:.0f} req/s plain, {t['batching_rps']:.0f} req/s with "
          f"adaptive batching {t['batching_settings']} (×{t['batching_over_plain']}), "
          f"median of {t['rounds']} alternating runs of {t['seconds_each']} s")

"""Lab 09's week of production traffic: seeded, replayable, and every incident in it documented.

``make_week(seed, pipeline)`` builds 168 simulated hours of requests to the digit classifier of
``labkit.guard``, from lab 07's digits: the ``week`` rows of its test part (``labkit.guard.digit_parts``), which
neither the model (trained on the train part) nor the detectors and CBPE (calibrated on the ``reference`` rows)
have seen:

- **ordinary days**: requests arrive as a Poisson process whose rate follows a daily rhythm, ``1 + 0.6 cos``
  of the hour, highest at 15:00 and lowest at 03:00, from 40 ordinary clients;
- **an outlier burst** (``outliers``, 3 hours on day 2): a broken app uploads camera frames and noise instead
  of digits (``labkit.data.digit_outliers``, kinds ``photo`` and ``noise``), about 60 % more traffic;
- **an adversarial burst** (``attack``, 3 hours on day 3): one client, not one of the 40, sends FGSM images
  (``labkit.adversarial.fgsm`` with the served model's own gradients, epsilon 0.15: a leaked copy of the model);
- **a bad deploy** (``bad_deploy``, 5 hours on day 4): version 2 serves; its classifier was trained on transposed
  images (a training/serving skew: confidently wrong, about 12 % right at a mean confidence of 0.998 on ordinary
  rows) and its new preprocessing fails with HTTP 500 on rows with little ink; then the team rolls back to
  version 1;
- **covariate drift** (``drift``, from a known hour of day 5 to the end): a new scanner, whose images are one
  pixel to the right and fainter (ink x 0.8); its share of the traffic grows from 0 to 90 % in 12 hours;
- **late labels**: half of the ordinary requests get their true label, 1 to 4 days later (``label_at``); outliers
  and the attacker's requests never do.

The incidents' hours are drawn from the seed within their days (``Week.incidents`` lists them), so a hidden week
has the same story at other times. ``replay`` sends a week through ``labkit.load`` on a simulated clock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

HOURS = 168
DAY = 24
INCIDENT_KINDS = ("outliers", "attack", "bad_deploy", "drift")
# Hours after an incident's start within which an alarm must fire (drift grows over 12 hours: 18 for it).
DELAY = {"outliers": 2, "attack": 2, "bad_deploy": 2, "drift": 18}
# The stage of the pipeline whose metrics show each incident first.
STAGE = {"outliers": "outlier", "attack": "adversarial", "bad_deploy": "model", "drift": "drift"}
GOOD, BAD = "1", "2"  # the versions of the week: the good model and the bad deploy
FAIL_BELOW_INK = 16.5  # the bad deploy's bug: rows with less total ink fail (about 9 % of ordinary digits)
N_CLIENTS = 40


@dataclass(frozen=True)
class Incident:
    kind: str
    start: float  # simulated hour
    end: float
    description: str

    @property
    def stage(self) -> str:
        return STAGE[self.kind]

    @property
    def delay(self) -> float:
        return DELAY[self.kind]


@dataclass
class Week:
    """The requests of a week, in time order, and what happened in it. Arrays have one entry per request."""

    t: np.ndarray  # simulated hour of arrival, 0 <= t < 168
    request_id: np.ndarray  # str
    client: np.ndarray  # str
    X: np.ndarray  # (n, 64) pixels in [0, 1]
    y: np.ndarray  # true digit, -1 for outliers (no digit)
    source: np.ndarray  # "ordinary", "drifted", "outlier" or "adversarial"
    version: np.ndarray  # the version that serves the request under the week's deploy schedule
    label_at: np.ndarray  # simulated hour the label arrives; inf: never
    incidents: list[Incident]
    seed: int
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t)

    def __repr__(self) -> str:
        told = ", ".join(f"{i.kind} {i.start:.0f}-{i.end:.0f} h" for i in self.incidents)
        return f"<Week seed {self.seed}: {len(self)} requests; {told}>"

    @property
    def attacker(self) -> str:
        return self.params["attacker"]

    def payload(self, i: int) -> dict:
        """Request ``i`` as Open Inference Protocol JSON: its id, its row, and who sent it when."""
        return {
            "id": str(self.request_id[i]),
            "parameters": {"client": str(self.client[i]), "t": float(self.t[i])},
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                        "data": np.asarray(self.X[i], np.float32).tolist()}],
        }

    def labels(self, by_hour: float = HOURS) -> dict:
        """The late labels that have arrived by ``by_hour``: ``{"request_id": [...], "label": [...],
        "arrived": [...]}``, in the order they arrived (not the order of the requests)."""
        arrived = np.flatnonzero(np.isfinite(self.label_at) & (self.label_at <= by_hour))
        arrived = arrived[np.argsort(self.label_at[arrived], kind="stable")]
        return {"request_id": self.request_id[arrived].tolist(), "label": self.y[arrived].astype(int).tolist(),
                "arrived": self.label_at[arrived].tolist()}

    def frame(self):
        """The requests as a pandas DataFrame (pixels left out)."""
        import pandas as pd

        return pd.DataFrame({"t": self.t, "request_id": self.request_id, "client": self.client, "y": self.y,
                             "source": self.source, "version": self.version, "label_at": self.label_at})


def drifted(images) -> np.ndarray:
    """The new scanner: each image one pixel to the right (the left column blank) and its ink x 0.8."""
    square = np.array(images, dtype=np.float32).reshape(-1, 8, 8)
    square = np.roll(square, 1, axis=2)
    square[:, :, 0] = 0
    return (square * 0.8).reshape(np.shape(images))


def rhythm(hour) -> np.ndarray:
    """Relative request rate at a simulated hour: 1.6 at 15:00, 0.4 at 03:00."""
    return 1 + 0.6 * np.cos(2 * np.pi * (np.asarray(hour, dtype=float) % DAY - 15) / DAY)


def _arrivals(rng, rate_per_hour: Callable, start: float, end: float) -> np.ndarray:
    """Poisson arrivals in [start, end) with an hourly rate that varies by hour (one Poisson count per hour)."""
    times = []
    for hour in range(int(np.floor(start)), int(np.ceil(end))):
        low, high = max(hour, start), min(hour + 1, end)
        n = rng.poisson(rate_per_hour(hour) * (high - low))
        times.append(rng.uniform(low, high, n))
    return np.sort(np.concatenate(times)) if times else np.zeros(0)


def make_week(seed: int = 0, pipeline=None, *, requests: int = 2400, label_share: float = 0.5,
              epsilon: float = 0.15) -> Week:
    """A week of about ``requests`` ordinary requests plus the bursts (see the module's docstring).

    ``pipeline``: the served ``labkit.guard.Pipeline``, whose gradients the attacker uses (default: the
    course's, ``labkit.guard.fit_pipeline(0)``).
    """
    from labkit.adversarial import fgsm
    from labkit.data import digit_outliers
    from labkit.guard import digit_parts

    if pipeline is None:
        pipeline = _default_pipeline()
    rng = np.random.default_rng(seed)
    base = requests / HOURS  # so that the rhythm averages to ``requests`` in the week
    hours = {  # each incident's start, within its day
        "outliers": 1 * DAY + rng.integers(6, 18), "attack": 2 * DAY + rng.integers(6, 18),
        "bad_deploy": 3 * DAY + rng.integers(6, 16), "drift": 4 * DAY + rng.integers(4, 16),
    }
    spans = {"outliers": 3, "attack": 3, "bad_deploy": 5, "drift": HOURS - hours["drift"]}
    attacker = f"client-{int(rng.integers(N_CLIENTS, 100)):02d}"
    test = digit_parts()["week"]

    # ordinary traffic, then the drift applied to the share of it that comes from the new scanner
    t = _arrivals(rng, lambda h: base * rhythm(h), 0, HOURS)
    rows = rng.integers(0, len(test), len(t))
    X, y = test.X[rows].copy(), test.labels[rows].copy()
    share = 0.9 * np.clip((t - hours["drift"]) / 12, 0, 1)
    scanned = rng.random(len(t)) < share
    X[scanned] = drifted(X[scanned])
    source = np.where(scanned, "drifted", "ordinary").astype(object)
    client = np.array([f"client-{c:02d}" for c in rng.integers(0, N_CLIENTS, len(t))], dtype=object)

    # the outlier burst: extra requests from ordinary clients
    s = hours["outliers"]
    t_out = _arrivals(rng, lambda h: 0.6 * base * rhythm(h), s, s + spans["outliers"])
    kinds = rng.random(len(t_out)) < 0.5
    X_out = np.where(kinds[:, None], digit_outliers("photo", len(t_out), int(rng.integers(2**31))).reshape(-1, 64),
                     digit_outliers("noise", len(t_out), int(rng.integers(2**31))).reshape(-1, 64))
    c_out = np.array([f"client-{c:02d}" for c in rng.integers(0, N_CLIENTS, len(t_out))], dtype=object)

    # the attack: one client, at 1.5 times the ordinary rate, FGSM on clean digits
    s = hours["attack"]
    t_adv = _arrivals(rng, lambda h: 1.5 * base * rhythm(h), s, s + spans["attack"])
    chosen = rng.integers(0, len(test), len(t_adv))
    X_adv = fgsm(pipeline.net.loss_gradient, test.X[chosen], test.labels[chosen], epsilon)

    t = np.r_[t, t_out, t_adv]
    order = np.argsort(t, kind="stable")
    n_out, n_adv = len(t_out), len(t_adv)
    X = np.r_[X, X_out, X_adv].astype(np.float32)[order]
    y = np.r_[y, np.full(n_out, -1), test.labels[chosen]].astype(np.int64)[order]
    source = np.r_[source, np.full(n_out, "outlier", object), np.full(n_adv, "adversarial", object)][order]
    client = np.r_[client, c_out, np.full(n_adv, attacker, object)][order]
    t = t[order]

    s = hours["bad_deploy"]
    version = np.where((t >= s) & (t < s + spans["bad_deploy"]), BAD, GOOD).astype(object)
    labelled = np.isin(source, ["ordinary", "drifted"]) & (rng.random(len(t)) < label_share)
    label_at = np.where(labelled, t + DAY * (1 + rng.gamma(2.0, 0.5, len(t))), np.inf)
    request_id = np.array([f"req-{i:05d}" for i in range(len(t))], dtype=object)

    said = {
        "outliers": "a broken app uploads camera frames and noise instead of digits",
        "attack": f"{attacker} sends FGSM images (epsilon {epsilon})",
        "bad_deploy": "version 2 serves: a classifier trained on transposed images, and HTTP 500 on faint rows",
        "drift": "a new scanner: images one pixel to the right and fainter; 90 % of the traffic 12 hours later",
    }
    incidents = [Incident(kind, float(hours[kind]), float(hours[kind] + spans[kind]), said[kind])
                 for kind in INCIDENT_KINDS]
    params = {"requests": requests, "label_share": label_share, "epsilon": epsilon, "attacker": attacker,
              **{f"{kind}_start": int(hours[kind]) for kind in INCIDENT_KINDS}}
    return Week(t, request_id, client, X, y, source, version, label_at, incidents, seed, params)


def next_day(seed: int, *, requests: int = 400, start: float = HOURS, drift_share: float = 0.9,
             label_share: float = 0.5) -> Week:
    """A day of traffic after the week (hours ``start`` to ``start + 24``), with the new scanner's share of the
    drift and no incident: the traffic a canary meets. It is drawn from the ``tomorrow`` rows
    (``labkit.guard.digit_parts``), which no model, detector or estimator has seen, and none of the week's
    rows. Labels come as in the week: for ``label_share`` of the requests, 1 to 4 days later (``label_at``)."""
    from labkit.guard import digit_parts

    rng = np.random.default_rng(seed)
    test = digit_parts()["tomorrow"]
    t = _arrivals(rng, lambda h: requests / DAY * rhythm(h), start, start + DAY)
    rows = rng.integers(0, len(test), len(t))
    X, y = test.X[rows].copy(), test.labels[rows].copy()
    scanned = rng.random(len(t)) < drift_share
    X[scanned] = drifted(X[scanned])
    client = np.array([f"client-{c:02d}" for c in rng.integers(0, N_CLIENTS, len(t))], dtype=object)
    labelled = rng.random(len(t)) < label_share
    label_at = np.where(labelled, t + DAY * (1 + rng.gamma(2.0, 0.5, len(t))), np.inf)
    return Week(t, np.array([f"day-{int(start // DAY) + 1}-{i:05d}" for i in range(len(t))], dtype=object), client,
                X.astype(np.float32), y.astype(np.int64),
                np.where(scanned, "drifted", "ordinary").astype(object), np.full(len(t), GOOD, dtype=object),
                label_at, [], seed, {"requests": requests, "drift_share": drift_share, "label_share": label_share})


@functools.lru_cache(maxsize=2)
def _default_pipeline(seed: int = 0):
    from labkit.guard import fit_pipeline

    return fit_pipeline(seed)


@functools.lru_cache(maxsize=2)
def bad_classifier(seed: int = 0) -> list:
    """The bad deploy's classifier: the same network, trained on transposed images (the skew's bug)."""
    from labkit.data import load_digits
    from labkit.guard import fit_classifier

    train = load_digits("train")
    return fit_classifier(train.images.transpose(0, 2, 1).reshape(-1, 64), train.labels, seed)


def serve_offline(week: Week, pipelines: dict, *, route: Callable | None = None, blocked=(),
                  fail_below_ink: dict | None = None) -> list[dict]:
    """What the service logs for each request of ``week``, computed in this process (the checks use this).

    ``pipelines`` maps versions to ``labkit.guard.Pipeline``s; ``route(i)`` gives the version of request ``i``
    (default: the week's deploy schedule); ``blocked`` clients get a 403; ``fail_below_ink`` maps versions to
    the bad deploy's bug (default: version 2 has it). One drift window per version, as one per served model.
    """
    from labkit.guard import DriftWindow, block_means

    fail_below_ink = {BAD: FAIL_BELOW_INK} if fail_below_ink is None else fail_below_ink
    versions = np.array([route(i) for i in range(len(week))] if route is not None else week.version, dtype=object)
    blocked = np.isin(week.client, list(blocked))
    # The same stages as labkit.guard.chain, run on all of a version's rows at once (the drift window row by row)
    records = [{"request_id": str(week.request_id[i]), "client": str(week.client[i]), "t": float(week.t[i]),
                "version": str(versions[i]), "status": 403 if blocked[i] else 200} for i in range(len(week))]
    for version, pipeline in pipelines.items():
        mine = np.flatnonzero((versions == version) & ~blocked)
        floor = fail_below_ink.get(version)
        if floor is not None:
            failed = week.X[mine].sum(axis=1) < floor
            for i in mine[failed]:
                records[i]["status"] = 500
            mine = mine[~failed]
        scores = pipeline.score(week.X[mine])
        features = block_means(week.X[mine])
        window = DriftWindow(pipeline.reference)
        for j, i in enumerate(mine):
            clean = not (scores.is_outlier[j] or scores.is_adversarial[j])
            p = window.update_features(features[j : j + 1] if clean else features[:0])
            records[i].update(predict=int(scores.predict[j]), confidence=float(scores.confidence[j]),
                              outlier_score=float(scores.outlier_score[j]), is_outlier=bool(scores.is_outlier[j]),
                              adversarial_score=float(scores.adversarial_score[j]),
                              is_adversarial=bool(scores.is_adversarial[j]), drift_p=p, stage_ms={})
    return records


# -- serving and replaying a week ------------------------------------------------------------------------------------

MAX_REPLAY_RATE = 300.0  # requests per second, whatever the clock asks: a laptop's loopback, bounded


def write_model(folder, pipeline, *, name: str, version: str, log, blocklist, fail_below_ink: float | None = None):
    """A model folder for ``labs/runtimes/guarded_service.py``: the runtime, the pipeline's arrays, settings."""
    import json
    import shutil
    from pathlib import Path

    from labkit import course

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(course.runtimes() / "guarded_service.py", folder / "guarded_service.py")
    pipeline.save(folder)
    settings = {"name": name, "implementation": "guarded_service.GuardedService",
                "parameters": {"uri": "./", "version": version,
                               "extra": {"log": str(Path(log).resolve()), "blocklist": str(Path(blocklist).resolve()),
                                         "fail_below_ink": fail_below_ink}}}
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return folder


@dataclass
class Chunk:
    """One part of a replay: the requests of ``hours`` simulated hours, sent as one bounded open loop."""

    start: float
    end: float
    indices: np.ndarray
    results: dict = field(default_factory=dict)  # version (None: split by the router) -> labkit.load.LoadResult
    seconds: float = 0.0  # wall time it took


def replay(target, model: str, week: Week, *, speed: float = 12.0, chunk_hours: float = 6, indices=None,
           pinned: bool = True, on_chunk: Callable | None = None, concurrency: int = 8) -> list[Chunk]:
    """Send ``week``'s requests (or those of ``indices``) to ``target`` through ``labkit.load``, on a simulated
    clock: ``speed`` simulated hours per second, so 168 hours take about 168 / speed seconds.

    The week is cut into chunks of ``chunk_hours``; each is an open loop at the rate its requests need to take
    ``chunk_hours / speed`` seconds (at most ``MAX_REPLAY_RATE``; a busier chunk takes longer: the clock waits).
    Each request carries its id, client and simulated hour. ``pinned``: each request names the version the
    week's deploy schedule gives it (``/v2/models/MODEL/versions/V/infer``: the router sends it to the route
    named V); otherwise the router splits the traffic. ``on_chunk(chunk)`` runs after each chunk (a dashboard
    updates there). Returns the chunks, each with its ``LoadResult``s.
    """
    import time

    from labkit import load

    indices = np.arange(len(week)) if indices is None else np.asarray(indices)
    t = week.t[indices]
    chunks = []
    start = float(np.floor(t.min() / chunk_hours) * chunk_hours) if len(t) else 0.0
    while len(t) and start <= t.max():
        end = start + chunk_hours
        chunk = Chunk(start, end, indices[(t >= start) & (t < end)])
        began = time.perf_counter()
        groups = sorted(set(week.version[chunk.indices])) if pinned else [None]
        for version in groups:
            mine = chunk.indices if version is None else chunk.indices[week.version[chunk.indices] == version]
            rate = min(len(mine) * speed / chunk_hours, MAX_REPLAY_RATE)
            chunk.results[version] = load.run(target, model, [week.payload(i) for i in mine], version=version,
                                              requests=len(mine), duration=len(mine) / rate + 10, rate=rate,
                                              warmup=0, concurrency=concurrency, progress=False)
        chunk.seconds = time.perf_counter() - began
        chunks.append(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
        start = end
    return chunks


def read_log(path) -> list[dict]:
    """The payload log's records (a last line still being written is skipped)."""
    import json
    from pathlib import Path

    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records

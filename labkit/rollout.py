"""Progressive delivery on a ``labkit.router.Router``: canary steps, analysis on its metrics, rollback, audit.

    >>> from labkit import rollout                                                      # doctest: +SKIP
    >>> plan = rollout.Rollout(router, [rollout.set_weight(0.1), rollout.analyse(3),
    ...                                 rollout.set_weight(0.5), rollout.analyse(3)],
    ...                        rollout.Guardrails(max_error_rate=0.02, max_latency=0.2), audit="audit.jsonl")
    >>> plan.start()                       # runs in the background while traffic flows:
    >>> load.run(router, "diagnosis", X, rate=50, duration=60, stop=plan.ended)   # until the rollout decides
    >>> plan.wait()                        # "promoted", "rolled back", "paused" or "aborted"
    >>> rollout.read_audit("audit.jsonl")  # every decision, with its reasons and numbers

This is the control plane of the router (the data plane). A rollout is a list of steps, run in order:

- ``set_weight(w)``: the candidate gets a share ``w`` of the traffic;
- ``analyse(seconds)``: read the router's metrics (``labkit.metrics``) at the start and the end of the window and
  judge the candidate on them (``judge``): its error rate, a latency quantile, its disagreement with stable (rows
  its shadow answers differed from stable's), and any model checks (``Guardrails.model_checks``, such as the
  shift in the share of a label, ``label_shift``). The outcome is ``success`` (go on), ``failure`` (roll back at
  once: weight 0, and the audit log says why) or ``inconclusive`` (too little traffic to judge: pause for a
  person);
- ``pause(seconds)``: wait; ``pause()`` without seconds is a manual gate: the rollout stops as ``paused`` until
  someone calls ``resume()``, ``promote()`` or ``abort()``.

After the last step the candidate is promoted (``promote_at_end=False`` leaves it at its weight, paused).
``blue_green`` is the other strategy: one switch of all the traffic, with checks before and after it, a switch
back when a check after it fails, and a pause for a person when the window after it is too thin to judge. Every
decision goes to the audit log (``Audit``), one JSON object per line.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from labkit import metrics

SUCCESS, FAILURE, INCONCLUSIVE = "success", "failure", "inconclusive"
# Rollout.status: pending, then running; it ends as one of the last four (paused can be resumed).
PENDING, RUNNING, PAUSED, PROMOTED, ROLLED_BACK, ABORTED = (
    "pending", "running", "paused", "promoted", "rolled back", "aborted")


# -- steps -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    kind: str  # "set_weight", "analyse" or "pause"
    weight: float | None = None
    seconds: float | None = None
    longest: float | None = None  # analyse: the most seconds its window may grow to while traffic is too thin

    def __str__(self) -> str:
        if self.kind == "set_weight":
            return f"set weight {self.weight:g}"
        if self.kind == "analyse":
            return f"analyse {self.seconds:g} s"
        return "pause for a person" if self.seconds is None else f"pause {self.seconds:g} s"


def set_weight(weight: float) -> Step:
    if not 0 <= weight <= 1:
        raise ValueError(f"a weight is a share from 0 to 1, not {weight!r}")
    return Step("set_weight", weight=float(weight))


def analyse(seconds: float, longest: float | None = None) -> Step:
    """An analysis window of ``seconds``; while it holds fewer than ``min_requests`` requests to the candidate it
    grows, up to ``longest`` seconds (None: 4 x ``seconds``), and only then is it inconclusive. So a slow machine
    or a quiet hour waits for evidence instead of asking a person at once."""
    if not seconds > 0:
        raise ValueError(f"an analysis window lasts more than 0 s, not {seconds!r}")
    longest = 4 * float(seconds) if longest is None else float(longest)
    if longest < seconds:
        raise ValueError(f"longest ({longest:g} s) must be at least seconds ({seconds:g} s)")
    return Step("analyse", seconds=float(seconds), longest=longest)


def pause(seconds: float | None = None) -> Step:
    """Wait ``seconds``; without seconds, stop until a person calls ``resume()``, ``promote()`` or ``abort()``."""
    return Step("pause", seconds=None if seconds is None else float(seconds))


# -- analysis ----------------------------------------------------------------------------------------------------
@dataclass
class Guardrails:
    """What a candidate must meet in an analysis window.

    max_error_rate    failed requests / requests (errors of any kind: HTTP 5xx and 4xx, timeouts, unreachable)
    max_latency       seconds, at ``latency_quantile`` of the router's latency histogram
    max_latency_increase  seconds the candidate's quantile may exceed stable's in the same window (None: not
                      checked); unlike ``max_latency``, a machine that is slow for everyone does not trip it
    max_disagreement  share of shadow rows that differ from stable's answer (None: not checked)
    min_requests      fewer requests than this in a window: inconclusive
    model_checks      name -> (measure, limit): ``measure(window)`` returns a number (or None: not enough to tell)
                      that must not exceed ``limit``, e.g. ``{"malignant share shift": (label_shift("malignant"),
                      0.1)}``
    """

    max_error_rate: float = 0.02
    max_latency: float = 0.25
    latency_quantile: float = 0.95
    max_latency_increase: float | None = None
    max_disagreement: float | None = None
    min_requests: int = 50
    model_checks: dict[str, tuple[Callable[[Window], float | None], float]] = field(default_factory=dict)


@dataclass
class Window:
    """What the router's metrics say about one route between two scrapes."""

    model: str
    version: str
    stable: str
    seconds: float
    requests: int
    errors: dict[str, int]  # by status: "500", "timeout", "unreachable", ...
    latency: float  # seconds at ``quantile``; NaN without requests
    quantile: float
    compared_rows: int  # shadow rows of this version compared with stable's answers
    disagreement: float | None  # share of them that differed; None when none were compared
    before: metrics.Scrape = field(repr=False)
    after: metrics.Scrape = field(repr=False)
    stable_latency: float = float("nan")  # stable's latency at ``quantile`` in the same window

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.requests if self.requests else float("nan")

    def summary(self) -> dict[str, Any]:
        """Plain numbers, for the audit log and tables."""
        return {"version": self.version, "seconds": round(self.seconds, 3), "requests": self.requests,
                "errors": dict(self.errors), "error_rate": _round(self.error_rate),
                f"p{self.quantile * 100:g}_s": _round(self.latency),
                f"stable_p{self.quantile * 100:g}_s": _round(self.stable_latency), "compared_rows": self.compared_rows,
                "disagreement": _round(self.disagreement)}


@dataclass
class Verdict:
    outcome: str  # SUCCESS, FAILURE or INCONCLUSIVE
    reasons: list[str]
    window: Window | None = None
    checks: dict[str, float | None] = field(default_factory=dict)  # model checks' values

    def __str__(self) -> str:
        return f"{self.outcome}: " + "; ".join(self.reasons)


def measure(before: metrics.Scrape, after: metrics.Scrape, model: str, version: str, stable: str,
            quantile: float = 0.95) -> Window:
    """The ``Window`` of route ``version`` between two scrapes of the router."""
    labels = {"model": model, "version": version}
    errors = {}
    for status in sorted({s.labels["status"] for s in after.samples if s.name == "router_errors_total"
                          and s.labels.get("model") == model and s.labels.get("version") == version}):
        n = int(round(metrics.increase(before, after, "router_errors_total", status=status, **labels)))
        if n:
            errors[status] = n
    rows = metrics.increase(before, after, "router_shadow_rows_total", primary=stable, **labels)
    differing = metrics.increase(before, after, "router_shadow_disagreements_total", primary=stable, **labels)
    return Window(
        model=model, version=version, stable=stable, seconds=after.time - before.time,
        requests=int(round(metrics.increase(before, after, "router_requests_total", **labels))), errors=errors,
        latency=metrics.quantile(before, after, "router_request_duration_seconds", quantile, **labels),
        quantile=quantile, compared_rows=int(rows), disagreement=differing / rows if rows else None,
        before=before, after=after,
        stable_latency=metrics.quantile(before, after, "router_request_duration_seconds", quantile, model=model,
                                        version=stable))


def judge(window: Window, guardrails: Guardrails) -> Verdict:
    """Success, failure or inconclusive, with the reasons, for one window."""
    g = guardrails
    if window.requests < g.min_requests:
        return Verdict(INCONCLUSIVE, [f"too little traffic to judge: {window.requests} requests to "
                                      f"{window.version} in {window.seconds:.1f} s, need {g.min_requests}"], window)
    failures, passed = [], []
    n_errors = sum(window.errors.values())
    detail = ", ".join(f"{n} x {status}" for status, n in window.errors.items())
    line = f"error rate {window.error_rate:.1%} ({n_errors} of {window.requests}{': ' + detail if detail else ''})"
    (failures if window.error_rate > g.max_error_rate else passed).append(
        f"{line} {'>' if window.error_rate > g.max_error_rate else '<='} {g.max_error_rate:.1%}")
    q = f"p{window.quantile * 100:g}"
    slow = not window.latency <= g.max_latency  # NaN (no answer timed) counts as too slow
    if math.isnan(window.latency):
        failures.append(f"{q} latency unknown: no answer of {window.version} was timed")
    else:
        (failures if slow else passed).append(
            f"{q} latency {window.latency * 1000:.0f} ms {'>' if slow else '<='} {g.max_latency * 1000:.0f} ms")
    if g.max_latency_increase is not None and window.version != window.stable \
            and not math.isnan(window.stable_latency):
        increase = window.latency - window.stable_latency
        bad = not increase <= g.max_latency_increase
        (failures if bad else passed).append(
            f"{q} latency {increase * 1000:+.0f} ms against {window.stable}'s "
            f"{window.stable_latency * 1000:.0f} ms {'>' if bad else '<='} +{g.max_latency_increase * 1000:.0f} ms")
    if g.max_disagreement is not None and window.disagreement is not None:
        bad = window.disagreement > g.max_disagreement
        (failures if bad else passed).append(
            f"disagreement with {window.stable} {window.disagreement:.1%} of {window.compared_rows} rows "
            f"{'>' if bad else '<='} {g.max_disagreement:.1%}")
    values = {}
    for name, (check, limit) in g.model_checks.items():
        try:
            value = check(window)
        except Exception as e:  # a broken check must not pass a candidate
            failures.append(f"{name}: the check raised {type(e).__name__}: {e}")
            continue
        values[name] = None if value is None else float(value)
        if value is not None:
            bad = not value <= limit
            (failures if bad else passed).append(f"{name} {value:.3g} {'>' if bad else '<='} {limit:.3g}")
    return Verdict(FAILURE if failures else SUCCESS, failures or passed, window, values)


def label_shift(value: str, output: str | None = None, min_rows: int = 100) -> Callable[[Window], float | None]:
    """A model check: how far the candidate's share of rows answered ``value`` is from stable's (absolute
    difference, from the router's ``router_output_rows_total``); None while either has fewer than ``min_rows``
    rows in the window (a share of a few rows is mostly noise: its standard error is about 0.5 / sqrt(rows))."""

    def shift(window: Window) -> float | None:
        shares = []
        for version in (window.version, window.stable):
            labels = {"model": window.model, "version": version, **({"output": output} if output else {})}
            total = metrics.increase(window.before, window.after, "router_output_rows_total", **labels)
            hits = metrics.increase(window.before, window.after, "router_output_rows_total", value=value, **labels)
            if total < max(min_rows, 1):
                return None
            shares.append(hits / total)
        return abs(shares[0] - shares[1])

    shift.__name__ = f"label_shift_{value}"
    return shift


# -- the audit log ---------------------------------------------------------------------------------------------
class Audit:
    """Decisions, one JSON object per line, in memory (``entries``) and in ``path`` when given (appended)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: list[dict] = []
        self._lock = threading.Lock()

    def record(self, action: str, **details: Any) -> dict:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "action": action, **details}
        with self._lock:
            self.entries.append(entry)
            if self.path:
                with self.path.open("a") as f:
                    f.write(json.dumps(entry, default=str) + "\n")
        return entry

    @classmethod
    def coerce(cls, audit: Audit | str | Path | None) -> Audit:
        return audit if isinstance(audit, Audit) else cls(audit)


def read_audit(path: str | Path) -> list[dict]:
    """The entries of an audit log file, in order (a torn last line is left out)."""
    entries = []
    for line in Path(path).read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


# -- a canary rollout -------------------------------------------------------------------------------------------
class Rollout:
    """Run ``steps`` on ``router``'s candidate (see the module's documentation).

    ``status`` is pending, running, paused, promoted, rolled back or aborted; ``verdicts`` holds each analysis,
    ``scrapes`` the router's metrics read every ``scrape_interval`` s while it ran (for ``plot``), and
    ``audit`` every decision.
    """

    def __init__(self, router, steps: list[Step], guardrails: Guardrails | None = None, *,
                 audit: Audit | str | Path | None = None, name: str = "rollout", promote_at_end: bool = True,
                 scrape_interval: float = 0.25):
        if router.config["candidate"] is None:
            raise ValueError("the router has no candidate to roll out")
        self.router, self.steps, self.name = router, list(steps), name
        self.guardrails = guardrails or Guardrails()
        self.audit = Audit.coerce(audit)
        self.promote_at_end = promote_at_end
        self.candidate = router.config["candidate"].name
        self.stable = router.config["stable"].name
        self.status = PENDING
        self.reason = ""
        self.verdicts: list[Verdict] = []
        self.marks: list[tuple[float, str]] = []  # (time.monotonic(), action) of each decision, for plots
        self.scrapes: list[metrics.Scrape] = []
        self.scrape_interval = scrape_interval
        self._next = 0  # the step to run next
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ended = threading.Event()  # set whenever run() returns: promoted, rolled back, aborted or paused

    # -- running ----------------------------------------------------------
    def run(self) -> str:
        """Run the steps from where the rollout stands, in this thread; returns the status."""
        try:
            return self._run()
        finally:
            self.ended.set()

    def _run(self) -> str:
        with self._lock:
            if self.status in (PROMOTED, ROLLED_BACK, ABORTED):
                return self.status
            self.ended.clear()
            self._log("start" if self._next == 0 else "resume", step=self._next)
            self.status = RUNNING
        stop_scraping = threading.Event()
        recorder = threading.Thread(target=self._scrape_until, args=(stop_scraping,), daemon=True)
        recorder.start()
        try:
            while self.status == RUNNING and self._next < len(self.steps):
                step = self.steps[self._next]
                self._next += 1
                self._do(step, self._next - 1)
            with self._lock:
                if self.status == RUNNING:
                    if self.promote_at_end:
                        self._promote("every step passed")
                    else:
                        self.status, self.reason = PAUSED, "every step passed; waiting for a person to promote"
                        self._log("pause", reason=self.reason)
        except Exception as e:  # the router broke, say: never leave the candidate with traffic
            self.rollback(f"the rollout itself failed: {type(e).__name__}: {e}")
        finally:
            stop_scraping.set()
            recorder.join()
        return self.status

    def start(self) -> Rollout:
        """``run()`` in a background thread (so that the notebook can send traffic meanwhile)."""
        self._thread = threading.Thread(target=self.run, name=f"labkit-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def resume(self) -> str:
        """Go on after a pause (a manual gate or an inconclusive analysis) with the next step."""
        if self.status != PAUSED:
            raise ValueError(f"only a paused rollout can resume; this one is {self.status}")
        return self.run()

    # -- decisions ---------------------------------------------------------
    def promote(self, reason: str = "promoted by a person") -> str:
        with self._lock:
            if self.status in (PROMOTED, ROLLED_BACK, ABORTED):
                raise ValueError(f"the rollout is over ({self.status})")
            self._promote(reason)
            self._stop.set()
        return self.status

    def abort(self, reason: str = "aborted by a person") -> str:
        """Stop the rollout: the candidate gets no more traffic."""
        return self._end(ABORTED, "abort", reason)

    def rollback(self, reason: str) -> str:
        return self._end(ROLLED_BACK, "rollback", reason)

    def _end(self, status: str, action: str, reason: str) -> str:
        with self._lock:
            if self.status in (PROMOTED, ROLLED_BACK, ABORTED):
                return self.status
            try:
                self.router.set_weight(0.0)
            except Exception as e:  # the router is gone: no traffic reaches the candidate anyway
                reason += f" (the router did not take weight 0: {type(e).__name__}: {e})"
            self.status, self.reason = status, reason
            self._log(action, reason=reason, weight=0.0)
            self._stop.set()
        return self.status

    def _promote(self, reason: str) -> None:
        self.router.promote()
        self.status, self.reason = PROMOTED, reason
        self._log("promote", reason=reason, new_stable=self.candidate)

    # -- steps ---------------------------------------------------------------
    def _do(self, step: Step, index: int) -> None:
        if step.kind == "set_weight":
            with self._lock:
                if self.status == RUNNING:
                    self.router.set_weight(step.weight)
                    self._log("set_weight", step=index, weight=step.weight)
        elif step.kind == "pause":
            if step.seconds is None:
                with self._lock:
                    if self.status == RUNNING:
                        self.status, self.reason = PAUSED, "manual gate: waiting for a person"
                        self._log("pause", step=index, reason=self.reason)
            else:
                self._stop.wait(step.seconds)
        else:
            verdict = self._analyse(step.seconds, step.longest or step.seconds)
            if verdict is None:
                return  # someone ended the rollout meanwhile
            self.verdicts.append(verdict)
            with self._lock:
                if self.status != RUNNING:
                    return
                self._log("analyse", step=index, outcome=verdict.outcome, reasons=verdict.reasons,
                          window=verdict.window.summary(), checks=verdict.checks)
                if verdict.outcome == FAILURE:
                    self.rollback(f"analysis failed: {'; '.join(verdict.reasons)}")
                elif verdict.outcome == INCONCLUSIVE:
                    self.status, self.reason = PAUSED, f"inconclusive: {'; '.join(verdict.reasons)}"
                    self._log("pause", step=index, reason=self.reason)

    def _analyse(self, seconds: float, longest: float) -> Verdict | None:
        before = metrics.scrape(self.router)
        if self._stop.wait(seconds):
            return None
        while True:
            after = metrics.scrape(self.router)
            window = measure(before, after, self.router.config["model"], self.candidate, self.stable,
                             self.guardrails.latency_quantile)
            if window.requests >= self.guardrails.min_requests or window.seconds >= longest:
                return judge(window, self.guardrails)
            if self._stop.wait(min(0.25, longest - window.seconds)):
                return None

    def _scrape_until(self, stop: threading.Event) -> None:
        while True:
            try:
                self.scrapes.append(metrics.scrape(self.router))
            except Exception:  # the router went away; the steps will say so
                return
            if stop.wait(self.scrape_interval):
                return

    def _log(self, action: str, **details: Any) -> None:
        self.marks.append((time.monotonic(), action))
        weight = details.pop("weight", None)
        if weight is None:
            weight = self.router.config["weight"] if self.router.config["candidate"] else 0.0
        self.audit.record(action, rollout=self.name, candidate=self.candidate, stable=self.stable,
                          weight=weight, **details)

    def __repr__(self) -> str:
        return f"<Rollout {self.name} {self.status} step {self._next}/{len(self.steps)} {self.reason}>"


# -- blue/green ---------------------------------------------------------------------------------------------------
def blue_green(router, checks: dict[str, Callable[[Any], Any]] | None = None, *, analyse_seconds: float = 0.0,
               longest: float | None = None, guardrails: Guardrails | None = None,
               audit: Audit | str | Path | None = None, name: str = "blue-green") -> Verdict:
    """Switch all traffic from stable (blue) to the candidate (green) in one step, with checks before and after.

    ``checks`` maps a name to ``check(route)``: called with the route to test, it passes by returning anything but
    False (or a string, which is the reason it failed) without raising. They run on green before the switch (a
    failure: no switch) and on the new stable after it, followed by an analysis window of ``analyse_seconds`` on
    the live traffic (0: none) that grows, as ``analyse`` does, up to ``longest`` seconds (None: 4 x
    ``analyse_seconds``) while green has fewer than ``min_requests`` requests. The verdict's outcome is

    - success: switched, and every check and the window passed;
    - failure: never switched (a pre-check failed), or switched back at once (a check or the window failed);
    - inconclusive: switched, but the window had too little traffic to judge. No traffic is not good news: green
      keeps the traffic, blue stands by as the router's candidate, and a person decides (``router.switch()``
      goes back), as a canary pauses on an inconclusive analysis.

    Each step is in the audit log: precheck, switch, then rollback, postcheck (success), or postcheck
    (inconclusive) and pause.
    """
    audit = Audit.coerce(audit)
    checks = dict(checks or {})
    blue, green = router.config["stable"], router.config["candidate"]
    if green is None:
        raise ValueError("the router has no candidate (green) to switch to")
    guardrails = guardrails or Guardrails()
    longest = 4 * analyse_seconds if longest is None else max(float(longest), analyse_seconds)
    log = {"rollout": name, "blue": blue.name, "green": green.name}

    failed = _run_checks(checks, green)
    audit.record("precheck", outcome=FAILURE if failed else SUCCESS, reasons=failed or sorted(checks), **log)
    if failed:
        return Verdict(FAILURE, [f"not switched: {r}" for r in failed])
    before = metrics.scrape(router)
    router.switch()
    audit.record("switch", stable=green.name, **log)
    failed = _run_checks(checks, green)
    verdict = None
    if not failed and analyse_seconds > 0:
        time.sleep(analyse_seconds)
        while True:
            window = measure(before, metrics.scrape(router), router.config["model"], green.name, green.name,
                             guardrails.latency_quantile)
            if window.requests >= guardrails.min_requests or window.seconds >= longest:
                break
            time.sleep(min(0.25, longest - window.seconds))
        verdict = judge(window, guardrails)
        if verdict.outcome == FAILURE:
            failed = verdict.reasons
    summary = verdict.window.summary() if verdict else None
    if failed:
        router.switch()
        audit.record("rollback", reason="post-switch check failed: " + "; ".join(failed), stable=blue.name,
                     window=summary, **log)
        return Verdict(FAILURE, [f"switched back: {r}" for r in failed], verdict.window if verdict else None)
    if verdict is not None and verdict.outcome == INCONCLUSIVE:
        audit.record("postcheck", outcome=INCONCLUSIVE, reasons=verdict.reasons, window=summary, **log)
        reason = (f"inconclusive: {'; '.join(verdict.reasons)}; {green.name} keeps the traffic and {blue.name} "
                  "stands by: waiting for a person (router.switch() switches back)")
        audit.record("pause", reason=reason, stable=green.name, **log)
        return Verdict(INCONCLUSIVE, [reason], verdict.window)
    reasons = sorted(checks) + (verdict.reasons if verdict else [])
    audit.record("postcheck", outcome=SUCCESS, reasons=reasons, window=summary, **log)
    return Verdict(SUCCESS, reasons, verdict.window if verdict else None)


def _run_checks(checks: dict, route) -> list[str]:
    failed = []
    for name, check in checks.items():
        try:
            result = check(route)
        except Exception as e:
            failed.append(f"{name} raised {type(e).__name__}: {e}")
            continue
        if result is False or isinstance(result, str):
            failed.append(f"{name}: {result}" if isinstance(result, str) else f"{name} failed")
    return failed


def smoke_check(model: str, payload: Any) -> Callable[[Any], Any]:
    """A blue/green check: the route answers ``payload`` for ``model`` directly (not through the router)."""
    from labkit.client import Client, InferenceServerError

    def answers(route) -> Any:
        with Client(route.url, timeout=5) as client:
            try:
                client.infer(route.model or model, payload, version=route.version)
            except (InferenceServerError, OSError) as e:
                return f"{route.name} did not answer: {e}"
        return True

    return answers


# -- plots ---------------------------------------------------------------------------------------------------------
def timeline(rollout: Rollout, every: float = 0.5) -> list[dict]:
    """Per interval of at least ``every`` seconds between the rollout's scrapes: the time, the candidate's weight
    (as set at the interval's start) and its share of the requests (as routed), its error rate, and its and
    stable's latency quantile (plain data for a table or ``plot``)."""
    model, q = rollout.router.config["model"], rollout.guardrails.latency_quantile
    versions = (rollout.stable, rollout.candidate)
    picked = rollout.scrapes[:1]
    for scrape in rollout.scrapes[1:]:
        if scrape.time - picked[-1].time >= every or scrape is rollout.scrapes[-1]:
            picked.append(scrape)
    rows = []
    t0 = picked[0].time if picked else 0.0
    for a, b in zip(picked, picked[1:], strict=False):
        counts = {v: metrics.increase(a, b, "router_requests_total", model=model, version=v) for v in versions}
        total = sum(counts.values())
        window = measure(a, b, model, rollout.candidate, rollout.stable, q)
        rows.append({"start": a.time - t0, "time": b.time - t0, "requests": total,
                     "weight": a.value("router_weight", model=model, version=rollout.candidate),
                     "candidate_share": counts[rollout.candidate] / total if total else math.nan,
                     "error_rate": window.error_rate, "latency": window.latency,
                     "stable_latency": window.stable_latency})
    return rows


def plot(rollout: Rollout, title: str | None = None):
    """Weight and traffic share, error rate and latency of the candidate over the rollout (stable's latency for
    comparison, the guardrails dashed), with its decisions marked."""
    import matplotlib.pyplot as plt

    rows = timeline(rollout)
    fig, axes = plt.subplots(3, 1, figsize=(7, 5.5), sharex=True)
    t = [r["start"] for r in rows[:1]] + [r["time"] for r in rows]

    def steps(ax, key, scale=1.0, **style):
        values = [r[key] * scale for r in rows]
        ax.stairs(values, t, baseline=None, **style)

    g = rollout.guardrails
    steps(axes[0], "candidate_share", color="tab:orange", label="share of requests")
    steps(axes[0], "weight", color="black", ls=":", label="weight set")
    axes[0].set(ylabel=f"to {rollout.candidate}", ylim=(-0.05, 1.05))
    axes[0].legend(loc="upper left", fontsize=8)
    steps(axes[1], "error_rate", color="crimson")
    axes[1].axhline(g.max_error_rate, color="grey", ls="--", lw=1)
    axes[1].set(ylabel="error rate")
    steps(axes[2], "latency", 1000, color="tab:blue", label=rollout.candidate)
    steps(axes[2], "stable_latency", 1000, color="grey", label=rollout.stable)
    if g.max_latency * 1000 < 3 * max([r["latency"] * 1000 for r in rows if r["latency"] == r["latency"]] or [0]):
        axes[2].axhline(g.max_latency * 1000, color="grey", ls="--", lw=1)
    axes[2].set(ylabel=f"p{g.latency_quantile * 100:g} ms", xlabel="seconds")
    axes[2].legend(loc="upper left", fontsize=8)
    t0 = rollout.scrapes[0].time if rollout.scrapes else 0.0
    colours = {"rollback": "crimson", "promote": "green", "pause": "grey", "abort": "black"}
    for when, action in rollout.marks:
        if action in colours:
            for ax in axes:
                ax.axvline(when - t0, color=colours[action], lw=1.5, alpha=0.7)
            axes[0].annotate(action, (when - t0, 1.0), fontsize=8, color=colours[action], ha="right", va="top",
                             rotation=90)
    fig.suptitle(title or f"{rollout.name}: {rollout.status}")
    fig.tight_layout()
    return fig


def _round(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 4)


__all__ = ["Audit", "Guardrails", "Rollout", "Step", "Verdict", "Window", "analyse", "blue_green", "judge",
           "label_shift", "measure", "pause", "plot", "read_audit", "set_weight", "smoke_check", "timeline"]

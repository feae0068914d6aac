"""Bounded load on an Open Inference Protocol (V2) server, over REST or gRPC.

    >>> from labkit import load                                    # doctest: +SKIP
    >>> result = load.run(server, "cancer", X[:1], concurrency=8, duration=3)
    >>> result.throughput, result.p99, result.errors

By default the load is a closed loop: ``concurrency`` simulated clients each send a request, wait for its answer
and send the next one, until ``requests`` answers have been measured or ``duration`` seconds have passed, whichever
comes first. A closed loop slows down with the server: while the server stalls, no new requests arrive, so the
stall shows in the few requests in flight only (what Gil Tene calls *coordinated omission*), and the load can never
exceed what the server can do.

With ``rate=`` the load is an open loop instead: request ``i`` is due at ``i / rate`` seconds, whatever the answers,
as when many independent users arrive; at most ``concurrency`` are in flight, and a due request that waits for a
free slot waits on the clock. Each latency is counted from the time the request was *due*, so waiting in the load
generator counts as waiting, as it would for a user.

Both limits always hold: at the time limit, requests still in flight (or due and waiting for a slot) are
cancelled and counted in ``cut_off``, not in the latencies. Warm-up requests go first and are not measured.

Requests are encoded once, before the clock starts, with the same code as ``labkit.client.Client`` (MLServer's
types and codecs for REST, MLServer's converters for gRPC), so the figures measure the server and the transport,
not the encoding of the request in this process. Responses are read in full but not decoded.

``run`` is a plain function that blocks until the load is over: it runs its own event loop in a thread, so it
works in scripts and in notebooks, whose event loop is already running. Traffic goes to loopback addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

from labkit.client import (
    GRPC_OPTIONS,
    JSON_HEADERS,
    InferenceServerError,
    grpc_request,
    infer_path,
    rest_body,
    rest_error_reason,
)

# Hard ceilings, whatever the caller asks for: this is a teaching tool on a laptop.
MAX_CONCURRENCY = 256
MAX_DURATION = 300.0
MAX_RATE = 5000.0  # requests per second of an open loop
TIMEOUT = "timeout"  # the error kind of a request that got no answer within ``timeout`` seconds


@dataclass(frozen=True)
class Sample:
    """One measured request."""

    start: float  # seconds since the measured phase began, when the request was sent (open loop: was due)
    latency: float  # seconds from then to having read the whole answer
    error: str | None = None  # None, or the kind of failure: "HTTP 500", "gRPC UNAVAILABLE", "timeout", ...


@dataclass
class LoadResult:
    """What one load run measured. Latencies are in seconds; ``summary()`` gives milliseconds."""

    protocol: str
    model: str
    concurrency: int
    samples: list[Sample]
    elapsed: float  # seconds of the measured phase
    stopped_by: str  # "requests", "duration" or "interrupted"
    cut_off: int = 0  # requests in flight at the time limit: cancelled, not measured
    error_reasons: dict[str, str] = field(default_factory=dict)  # one example message per error kind
    rate: float | None = None  # open loop: the requests per second it offered; None for a closed loop

    @property
    def latencies(self) -> np.ndarray:
        """Latencies of the successful requests, in seconds, in the order they were sent."""
        return np.array([s.latency for s in self.samples if s.error is None], dtype=float)

    @property
    def ok(self) -> int:
        return sum(s.error is None for s in self.samples)

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by kind of failure, e.g. ``{"HTTP 500": 3}``; empty when all succeeded."""
        return dict(Counter(s.error for s in self.samples if s.error is not None).most_common())

    @property
    def throughput(self) -> float:
        """Successful requests per second over the measured phase."""
        return self.ok / self.elapsed if self.elapsed > 0 else float("nan")

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the successful latencies, in seconds (numpy's linear method)."""
        latencies = self.latencies
        return float(np.percentile(latencies, q)) if latencies.size else float("nan")

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def max(self) -> float:
        latencies = self.latencies
        return float(latencies.max()) if latencies.size else float("nan")

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a table or a JSON file: counts, requests per second, latencies in ms."""
        ms = 1000
        return {
            "protocol": self.protocol,
            "concurrency": self.concurrency,
            "offered_rps": self.rate,
            "requests": len(self.samples),
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.p50 * ms, 2),
            "p90_ms": round(self.p90 * ms, 2),
            "p99_ms": round(self.p99 * ms, 2),
            "max_ms": round(self.max * ms, 2),
            "elapsed_s": round(self.elapsed, 2),
            "stopped_by": self.stopped_by,
        }

    def __str__(self) -> str:
        errors = ", ".join(f"{n} {kind}" for kind, n in self.errors.items()) or "no errors"
        errors += f", {self.cut_off} cut off at the time limit" if self.cut_off else ""
        load = f"x{self.concurrency}" if self.rate is None else f"open loop at {self.rate:g} req/s"
        return (
            f"{self.protocol} {load}: {self.ok} ok in {self.elapsed:.2f} s = {self.throughput:.0f} req/s; "
            f"p50 {self.p50 * 1000:.1f} ms, p90 {self.p90 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, "
            f"max {self.max * 1000:.1f} ms; {errors}"
        )

    def __repr__(self) -> str:
        return f"<LoadResult {self}>"


def run(
    target: Any,
    model: str,
    inputs: Any,
    protocol: str = "rest",
    *,
    concurrency: int = 8,
    requests: int | None = 1000,
    duration: float | None = 10.0,
    warmup: int = 10,
    timeout: float = 10.0,
    version: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    description: str | None = None,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Send concurrent inference requests to ``model`` and measure them.

    target       a ``labkit.serving.Server``, a base URL (REST) or ``host:port`` (gRPC), on a loopback address
    inputs       what each request carries: anything ``labkit.client.as_request`` takes (a numpy array, a
                 DataFrame, an ``InferenceRequest`` or its JSON dict), or a list of them, sent in turn
    protocol     ``"rest"`` or ``"grpc"``
    concurrency  simulated clients, each with one request in flight at a time; with ``rate``, the most requests
                 in flight at once
    requests     stop after this many measured requests (None: no count limit)
    duration     stop after this many seconds of measuring (None: no time limit); at least one limit is needed.
                 With ``rate``, give a little more than ``requests / rate``, so that the last answers can arrive
    rate         None: a closed loop. A number: an open loop, one request due every ``1 / rate`` seconds
    warmup       requests sent first and not measured; the first one goes alone and, if the server refuses it,
                 ``run`` raises ``InferenceServerError`` with the server's reason instead of measuring failures
    timeout      seconds a request may take before it counts as an error of kind ``"timeout"``
    progress     show a ``tqdm.auto`` progress bar
    stop         a ``threading.Event``: setting it ends the load early, like an interrupt (``stopped_by``
                 "interrupted"), e.g. when a rollout that the load feeds has decided
    Returns a ``LoadResult``: ``throughput``, ``p50``/``p90``/``p99``/``max`` (seconds), ``errors`` by kind,
    the raw ``samples``, and ``summary()`` as plain numbers.
    """
    if protocol not in ("rest", "grpc"):
        raise ValueError(f"protocol must be 'rest' or 'grpc', not {protocol!r}")
    if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, not {concurrency!r}")
    if requests is None and duration is None:
        raise ValueError("give a request count, a duration or both: an unbounded load is not allowed")
    if requests is not None and (not isinstance(requests, int) or requests < 1):
        raise ValueError(f"requests must be a positive whole number or None, not {requests!r}")
    duration = MAX_DURATION if duration is None else float(duration)
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be more than 0 and at most {MAX_DURATION:g} s, not {duration!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a whole number of requests, 0 or more, not {warmup!r}")
    if rate is not None:
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"rate must be a number of requests per second, not {rate!r}") from None
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be more than 0 and at most {MAX_RATE:g} requests per second, not {rate!r}")
    if hasattr(target, "url"):
        target = target.url if protocol == "rest" else target.grpc_target
    target = str(target)
    _require_loopback(target, protocol)
    payloads = inputs if isinstance(inputs, list) else [inputs]
    if not payloads:
        raise ValueError("inputs is an empty list: give at least one request")
    if protocol == "rest":
        encoded = [rest_body(p).encode() for p in payloads]
    else:
        encoded = [grpc_request(model, p, version) for p in payloads]

    plan = _Plan(protocol, target, model, version, encoded, concurrency, requests, duration, warmup, timeout, rate)
    if stop is not None:
        plan.interrupt = stop
    bar = None
    if progress:
        from tqdm.auto import tqdm

        shown = description or (f"{protocol} x{concurrency}" if rate is None else f"{protocol} at {rate:g}/s")
        bar = tqdm(total=requests, desc=shown, unit="req", leave=False)
    threading.Thread(target=plan.run_in_own_loop, name="labkit-load", daemon=True).start()
    # Wait on an Event, not Thread.join: an interrupt inside join() can leave the thread looking finished.
    try:
        while not plan.finished.wait(0.1):
            if bar is not None:
                bar.update(plan.done - bar.n)
    except KeyboardInterrupt:
        plan.interrupt.set()  # ends the load within one poll interval; the partial result is returned
        plan.finished.wait()
    finally:
        if bar is not None:
            bar.close()
    if plan.failure is not None:
        raise plan.failure
    return plan.result


def _require_loopback(target: str, protocol: str) -> None:
    host = httpx.URL(target).host if protocol == "rest" else target.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"labkit.load sends traffic to this machine only (127.0.0.1, ::1 or localhost), not to {host!r} "
            f"(from {target!r})"
        )


@dataclass
class _Plan:
    """One load run, executed in its own thread and event loop."""

    protocol: str
    target: str
    model: str
    version: str | None
    encoded: list
    concurrency: int
    requests: int | None
    duration: float
    warmup: int
    timeout: float
    rate: float | None = None
    done: int = 0  # measured requests finished so far (read by the progress bar)
    interrupt: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    result: LoadResult | None = None
    failure: BaseException | None = None

    def run_in_own_loop(self) -> None:
        try:
            self.result = asyncio.run(self._main())
        except BaseException as e:  # handed to the calling thread, which raises it
            self.failure = e
        finally:
            self.finished.set()

    async def _main(self) -> LoadResult:
        async with self._sender() as send:
            reasons: dict[str, str] = {}
            if self.warmup:
                kind, reason = await send(0)
                if kind is not None:
                    status = kind.split(" ", 1)[-1]
                    status = int(status) if status.isdigit() else status  # as Client reports it
                    raise InferenceServerError(status, reason, f"the first warm-up request to {self.model!r}")
                await self._phase(send, self.warmup - 1, self.timeout * 2, record=None, reasons=reasons)
            samples: list[Sample] = []
            t0 = time.perf_counter()
            phase = self._phase if self.rate is None else self._open_phase
            stopped_by, cut_off, end = await phase(
                send, self.requests, self.duration, record=samples, reasons=reasons, t0=t0
            )
        elapsed = self.duration if stopped_by == "duration" else end - t0
        return LoadResult(self.protocol, self.model, self.concurrency, samples, elapsed, stopped_by, cut_off,
                          reasons, self.rate)

    async def _phase(self, send, count, duration, *, record, reasons, t0=None):
        """Send ``count`` requests (None: no limit) from ``concurrency`` clients for at most ``duration`` s."""
        t0 = time.perf_counter() if t0 is None else t0
        deadline = t0 + duration
        issued = 0
        in_flight = 0
        end = t0

        async def client() -> None:
            nonlocal issued, in_flight, end
            while (count is None or issued < count) and not self.interrupt.is_set():
                index = issued
                issued += 1
                in_flight += 1
                start = time.perf_counter()
                kind, reason = await send(index)
                end = time.perf_counter()
                in_flight -= 1
                if kind is not None:
                    reasons.setdefault(kind, reason)
                if record is not None:
                    record.append(Sample(start - t0, end - start, kind))
                    self.done += 1

        tasks = [asyncio.create_task(client()) for _ in range(self.concurrency)]
        pending = set(tasks)
        # Poll, so that both the time limit and an interrupt from the calling thread end the phase promptly.
        while pending and not self.interrupt.is_set():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(remaining, 0.05))
        cut_off = in_flight if pending else 0
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        if self.interrupt.is_set():
            stopped_by, end = "interrupted", time.perf_counter()
        elif pending:
            stopped_by = "duration"
        else:
            stopped_by = "requests"
        return stopped_by, cut_off, end

    async def _open_phase(self, send, count, duration, *, record, reasons, t0):
        """An open loop: request ``i`` is due at ``t0 + i / rate``; latencies count from that time."""
        deadline = t0 + duration
        slots = asyncio.Semaphore(self.concurrency)
        end = t0

        async def request(index: int, due: float) -> None:
            nonlocal end
            async with slots:  # a due request that finds every slot taken waits, and its latency grows
                kind, reason = await send(index)
            end = time.perf_counter()
            if kind is not None:
                reasons.setdefault(kind, reason)
            record.append(Sample(due - t0, end - due, kind))
            self.done += 1

        tasks = []
        # Issue each request when it is due; one that is late (the loop was busy) goes at once, still timed from
        # when it was due. Sleep in short steps so that an interrupt ends the run promptly.
        while (count is None or len(tasks) < count) and not self.interrupt.is_set():
            due = t0 + len(tasks) / self.rate
            if due >= deadline:
                break
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.05))
                continue
            tasks.append(asyncio.create_task(request(len(tasks), due)))
        pending = {task for task in tasks if not task.done()}
        while pending and not self.interrupt.is_set():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(remaining, 0.05))
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        if self.interrupt.is_set():
            stopped_by, end = "interrupted", time.perf_counter()
        elif pending or (count is not None and len(tasks) < count) or count is None:
            stopped_by = "duration"
        else:
            stopped_by = "requests"
        return stopped_by, len(pending), end

    @contextlib.asynccontextmanager
    async def _sender(self):
        """``send(i)`` sends request number ``i`` and returns ``(None, "")`` or ``(error kind, reason)``."""
        encoded = self.encoded
        if self.protocol == "rest":
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            async with httpx.AsyncClient(base_url=self.target, timeout=self.timeout, limits=limits,
                                         trust_env=False) as http:
                path = infer_path(self.model, self.version)

                async def send(i: int):
                    try:
                        reply = await http.post(path, content=encoded[i % len(encoded)], headers=JSON_HEADERS)
                    except httpx.TimeoutException:
                        return TIMEOUT, f"no answer within {self.timeout:g} s"
                    except httpx.HTTPError as e:
                        return type(e).__name__, str(e) or type(e).__name__
                    if reply.status_code >= 400:
                        return f"HTTP {reply.status_code}", rest_error_reason(reply)
                    return None, ""

                yield send
            return
        async with grpc.aio.insecure_channel(self.target, options=GRPC_OPTIONS) as channel:
            stub = GRPCInferenceServiceStub(channel)

            async def send(i: int):
                try:
                    await stub.ModelInfer(encoded[i % len(encoded)], timeout=self.timeout)
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        return TIMEOUT, f"no answer within {self.timeout:g} s"
                    return f"gRPC {e.code().name}", e.details() or ""
                return None, ""

            yield send

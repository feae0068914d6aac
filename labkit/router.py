"""A traffic router in front of MLServer: weighted split, sticky sessions, shadow mirroring, metrics per version.

    >>> from labkit.router import Route, Router                                         # doctest: +SKIP
    >>> router = Router("diagnosis", stable=Route("v1", server, "v1"), candidate=Route("v2", server, "v2"),
    ...                 weight=0.1, shadow=None).start()
    >>> Client(router).predict("diagnosis", X)         # V2 REST, exactly as MLServer's own endpoint
    >>> router.set_weight(0.5); router.state()         # the admin API, at run time
    >>> metrics.scrape(router)                         # Prometheus metrics per version (route name)

The router is the data plane of a rollout (``labkit.rollout`` is the control plane). Clients call
``POST /v2/models/MODEL/infer`` on it as they would call MLServer; the router sends each request to one *route*
(a server, a model name and a version there) and returns that server's answer unchanged, with the header
``x-labkit-route`` naming the route that answered:

- a share ``weight`` of requests goes to the ``candidate``, the rest to ``stable``;
- a request with the sticky header (``x-session-id`` by default) is routed by a hash of its value, so one client
  stays on one version as long as the weight does not change (and, as the weight grows, only moves from stable
  to candidate, never back);
- a share ``mirror`` of requests is also sent to the ``shadow``: its answer and latency are recorded (metrics and
  payload log) and compared with the primary answer, but never returned, and the caller never waits for it: it
  runs in the background with its own ``shadow_timeout`` and its own connection pool;
- with ``fallback`` on, a request whose candidate cannot be reached (connection refused) is answered by stable;
  the candidate's failure is still counted.

A request that names a version (``/v2/models/MODEL/versions/V/infer``) goes to the route of that name, without a
split; every other path (health, metadata, other models) goes to stable's server. Only REST: no gRPC.

Metrics (``GET /metrics``, labels ``model`` and ``version``, the route's name): ``router_requests_total``,
``router_errors_total`` (with ``status``: an HTTP code, ``timeout`` or ``unreachable``),
``router_request_duration_seconds`` (histogram), ``router_weight`` (gauge), ``router_output_rows_total`` (rows
per value of the compared output, with ``value``), and for the shadow ``router_shadow_requests_total``,
``router_shadow_errors_total``, ``router_shadow_duration_seconds``, ``router_shadow_rows_total`` (rows compared)
and ``router_shadow_disagreements_total`` (rows whose compared output differs from the primary's).

The payload log (``payload_log=PATH``) gets one JSON line per answer: ``time``, ``id`` (the request's ``id``,
made up when the client sent none, and passed on to the server so its answer carries it too), ``model``,
``version``, ``role`` (``primary`` or ``shadow``), ``session`` (the sticky header's value, or None), ``status``,
``latency`` (s), ``inputs`` and ``outputs`` (V2 JSON), so labels that arrive later can be joined on ``id``.

The router runs as its own process on a free port of 127.0.0.1 (a small Starlette app under uvicorn) supervised as
``labkit.serving`` supervises MLServer: it ends when ``stop()`` is called, when the kernel exits, and when the
kernel is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.serving import HOST, LOG_NAME, ServerError, ask_to_stop, free_port, spawn_supervised, watch_owner

ROUTE_HEADER = "x-labkit-route"  # on every answer: the name of the route that answered
FALLBACK_HEADER = "x-labkit-fallback"  # on an answer from stable because the candidate was unreachable
STICKY_HEADER = "x-session-id"
# Seconds; fine enough below 100 ms, where a loopback model answers.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
MAX_SHADOW_IN_FLIGHT = 32  # more mirrored calls than this waiting on a slow shadow: skip mirroring, count it
MAX_OUTPUT_VALUES = 32  # distinct values of the compared output counted per version (a bound on label cardinality)
_SETTABLE = ("stable", "candidate", "shadow", "weight", "mirror", "compare", "tolerance", "timeout",
             "shadow_timeout", "fallback", "sticky_header")
_ROUTERS: set[Router] = set()


@dataclass(frozen=True)
class Route:
    """Where a route's requests go: ``url`` (a ``Server`` or its base URL), ``version`` there (None: the
    model's default version) and ``model`` there (None: the model the client named). ``name`` labels its
    metrics and answers."""

    name: str
    url: Any
    version: str | None = None
    model: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "url", str(self.url.url if hasattr(self.url, "url") else self.url).rstrip("/"))
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a route needs a name (it labels the metrics), not {self.name!r}")

    def infer_url(self, model: str) -> str:
        name = self.model or model
        return f"{self.url}/v2/models/{name}" + (f"/versions/{self.version}" if self.version else "") + "/infer"

    @classmethod
    def coerce(cls, value: Any) -> Route | None:
        if value is None or isinstance(value, Route):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"a route is a Route or a dict with name, url, version and model, not {value!r}")


def sticky_unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: a sticky client goes to the candidate when it is below the weight."""
    digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Router:
    """The router process, seen from the notebook. See the module's documentation for what it does.

    model           the model name clients call (``/v2/models/MODEL/infer``)
    stable          the ``Route`` that gets ``1 - weight`` of the traffic
    candidate       the ``Route`` that gets ``weight`` of it (None: everything to stable)
    shadow          a ``Route`` that gets a copy of ``mirror`` of the requests, in the background
    sticky_header   requests that carry it are routed by a hash of its value
    compare         the output compared with the shadow's and counted per value (None: the first output)
    tolerance       numbers differing by at most this much agree
    timeout         seconds for a primary call (the client then gets a 504)
    shadow_timeout  seconds for a mirrored call, on its own
    fallback        answer from stable when the candidate cannot be reached
    payload_log     a file to append one JSON line per answer to (None: no payload log)
    seed            seeds the weighted split of requests without a sticky header
    """

    def __init__(
        self,
        model: str,
        stable: Route | dict,
        candidate: Route | dict | None = None,
        *,
        weight: float = 0.0,
        shadow: Route | dict | None = None,
        mirror: float = 1.0,
        sticky_header: str = STICKY_HEADER,
        compare: str | None = None,
        tolerance: float = 1e-9,
        timeout: float = 10.0,
        shadow_timeout: float = 1.0,
        fallback: bool = True,
        payload_log: str | os.PathLike | None = None,
        seed: int | None = None,
        port: int | None = None,
        start_timeout: float = 20.0,
    ):
        self.config = _validated({
            "model": str(model), "stable": stable, "candidate": candidate, "shadow": shadow, "weight": weight,
            "mirror": mirror, "sticky_header": sticky_header, "compare": compare, "tolerance": tolerance,
            "timeout": timeout, "shadow_timeout": shadow_timeout, "fallback": fallback,
            "payload_log": str(Path(payload_log).resolve()) if payload_log else None, "seed": seed,
        })
        if self.config["stable"] is None:
            raise ValueError("a router needs a stable route")
        self.port = port
        self.start_timeout = start_timeout
        self.workdir: Path | None = None
        self._supervisor = None
        self._http = None
        self._final_log = ""

    # -- addresses ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def running(self) -> bool:
        return self._supervisor is not None and self._supervisor.poll() is None

    @property
    def pid(self) -> int | None:
        return self._supervisor.pid if self._supervisor is not None else None

    # -- life cycle --------------------------------------------------------
    def start(self) -> Router:
        import httpx

        if self.running:
            return self
        self.port = self.port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="labkit-router-"))
        (self.workdir / "config.json").write_text(json.dumps({**_plain(self.config), "port": self.port}))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        self._supervisor = spawn_supervised([sys.executable, "-m", "labkit.router", str(self.workdir)],
                                            self.workdir, env)
        _ROUTERS.add(self)
        self._http = httpx.Client(base_url=self.url, timeout=5, trust_env=False)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5) -> None:
        """Stop the router (at once: it has no workers); its log stays readable."""
        sup = self._supervisor
        if sup is None:
            return
        if sup.poll() is None and not ask_to_stop(sup, timeout):
            sup.kill()
            sup.wait()
        _ROUTERS.discard(self)
        self._supervisor = None
        if self._http is not None:
            self._http.close()
        self._final_log = self.logs(1000)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        try:
            text = (self.workdir / LOG_NAME).read_text(errors="replace")
        except (FileNotFoundError, TypeError):
            text = self._final_log
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        c = self.config
        routes = f"stable={c['stable'].name}" + (f" candidate={c['candidate'].name} weight={c['weight']:g}"
                                                  if c["candidate"] else "")
        routes += f" shadow={c['shadow'].name} mirror={c['mirror']:g}" if c["shadow"] else ""
        return f"<Router {state} {self.url} model={c['model']} {routes}>"

    # -- the admin API -------------------------------------------------------
    def state(self) -> dict:
        """The router's routing state as it is now: routes (as dicts), weight, mirror and the other settings."""
        return self._admin("GET")

    def update(self, **changes: Any) -> dict:
        """Change any of stable, candidate, shadow (a ``Route``, a dict or None), weight, mirror, compare,
        tolerance, timeout, shadow_timeout, fallback, sticky_header at once (atomically); returns the new state."""
        bad = sorted(set(changes) - set(_SETTABLE))
        if bad:
            raise ValueError(f"cannot change {', '.join(bad)}; settable: {', '.join(_SETTABLE)}")
        body = _plain(_validated({**self.config, **changes}))
        state = self._admin("POST", {k: body[k] for k in changes})
        self.config = _validated({k: state[k] for k in self.config})
        return state

    def set_weight(self, weight: float) -> dict:
        """The candidate's share of the traffic, from 0 to 1."""
        return self.update(weight=weight)

    def switch(self) -> dict:
        """Blue/green: candidate and stable swap places in one step, and the candidate (the old stable) gets no
        traffic; switch again to go back."""
        c = self.config
        if c["candidate"] is None:
            raise ValueError("no candidate to switch to")
        return self.update(stable=c["candidate"], candidate=c["stable"], weight=0.0)

    def promote(self) -> dict:
        """The candidate becomes stable and takes all the traffic; there is no candidate afterwards."""
        c = self.config
        if c["candidate"] is None:
            raise ValueError("no candidate to promote")
        return self.update(stable=c["candidate"], candidate=None, weight=0.0)

    def _admin(self, method: str, body: dict | None = None) -> dict:
        if not self.running:
            raise ServerError("the router is not running")
        reply = self._http.request(method, "/admin/state", json=body)
        if reply.status_code != 200:
            raise ValueError(f"the router refused the change: {reply.text}")
        return reply.json()

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._supervisor.poll() is not None:
                raise ServerError("the router stopped before it was ready. Last lines of its log:\n" + self.logs())
            if time.monotonic() > deadline:
                raise ServerError(f"the router was not ready after {self.start_timeout:g} s. Its log:\n"
                                  + self.logs())
            try:
                if self._http.get("/admin/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


def running_routers() -> list[Router]:
    return [r for r in list(_ROUTERS) if r.running]


def stop_all() -> None:
    for router in list(_ROUTERS):
        router.stop()


atexit.register(stop_all)


def _validated(config: dict) -> dict:
    """``config`` with routes as ``Route`` and numbers checked; a ValueError says what is wrong."""
    config = dict(config)
    for key in ("stable", "candidate", "shadow"):
        config[key] = Route.coerce(config.get(key))
    for key in ("weight", "mirror"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{key} is a share from 0 to 1, not {value!r}")
        config[key] = float(value)
    for key in ("timeout", "shadow_timeout", "tolerance"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a number of 0 or more, not {value!r}")
        config[key] = float(value)
    if not isinstance(config["sticky_header"], str) or not config["sticky_header"]:
        raise ValueError(f"sticky_header must be a header name, not {config['sticky_header']!r}")
    config["sticky_header"] = config["sticky_header"].lower()
    config["fallback"] = bool(config["fallback"])
    return config


def _plain(config: dict) -> dict:
    return {k: asdict(v) if isinstance(v, Route) else v for k, v in config.items()}


# --------------------------------------------------------------------------------------------------------------
# The router process: ``python -m labkit.router WORKDIR`` (started by ``Router.start``).


def build_app(config: dict):
    """The router's Starlette application for ``config`` (the dict ``Router`` writes)."""
    import httpx
    import numpy as np
    from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                                   disable_created_metrics, generate_latest)
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route as Endpoint

    disable_created_metrics()  # no *_created samples: they only double the page (this is the router's process)
    state = _validated({k: v for k, v in config.items() if k != "port"})
    rng = random.Random(state["seed"])
    registry = CollectorRegistry()
    labels = ("model", "version")
    m_requests = Counter("router_requests", "Requests answered, by route", labels, registry=registry)
    m_errors = Counter("router_errors", "Failed requests, by route and status", labels + ("status",),
                       registry=registry)
    m_latency = Histogram("router_request_duration_seconds", "Seconds from arrival to the route's answer", labels,
                          buckets=LATENCY_BUCKETS, registry=registry)
    m_weight = Gauge("router_weight", "Share of the traffic each route gets", labels, registry=registry)
    m_values = Counter("router_output_rows", "Rows answered per value of the compared output",
                       labels + ("output", "value"), registry=registry)
    s_requests = Counter("router_shadow_requests", "Mirrored requests, by shadow route", labels, registry=registry)
    s_errors = Counter("router_shadow_errors", "Failed mirrored requests", labels + ("status",), registry=registry)
    s_latency = Histogram("router_shadow_duration_seconds", "Seconds a mirrored request took", labels,
                          buckets=LATENCY_BUCKETS, registry=registry)
    s_rows = Counter("router_shadow_rows", "Rows compared between the shadow and the primary answer",
                     labels + ("primary",), registry=registry)
    s_disagree = Counter("router_shadow_disagreements", "Compared rows whose output differs from the primary's",
                         labels + ("primary",), registry=registry)
    s_skipped = Counter("router_shadow_skipped", "Requests not mirrored because too many mirrors were in flight",
                        ("model",), registry=registry)
    clients: dict[str, httpx.AsyncClient] = {}
    shadows: set[asyncio.Task] = set()
    log = open(state["payload_log"], "a", buffering=1) if state["payload_log"] else None  # noqa: SIM115
    seen_values: dict[str, set] = {}

    def show_weights() -> None:
        m_weight.clear()
        m_weight.labels(state["model"], state["stable"].name).set(1 - state["weight"] if state["candidate"] else 1)
        if state["candidate"]:
            m_weight.labels(state["model"], state["candidate"].name).inc(state["weight"])

    show_weights()

    async def startup() -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        clients["primary"] = httpx.AsyncClient(timeout=state["timeout"], limits=limits, trust_env=False)
        # Its own pool: a slow shadow must not hold the connections that stable answers need.
        clients["shadow"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=MAX_SHADOW_IN_FLIGHT),
                                              trust_env=False)

    async def shutdown() -> None:
        for task in list(shadows):
            task.cancel()
        for client in clients.values():
            await client.aclose()
        if log:
            log.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await startup()
        try:
            yield
        finally:
            await shutdown()

    async def call(route: Route, content: bytes, role: str) -> tuple[int, bytes, str | None]:
        """``(status, body, error kind)``: kind None, an HTTP status, ``timeout`` or ``unreachable``."""
        timeout = state["timeout"] if role == "primary" else state["shadow_timeout"]
        try:
            reply = await asyncio.wait_for(
                clients[role].post(route.infer_url(state["model"]), content=content,
                                   headers={"content-type": "application/json"}, timeout=timeout),
                timeout)
        except (TimeoutError, httpx.TimeoutException):
            return 504, _error(f"route {route.name!r} gave no answer within {timeout:g} s"), "timeout"
        except httpx.HTTPError as e:
            return 502, _error(f"route {route.name!r} is unreachable: {type(e).__name__} {e}"), "unreachable"
        kind = str(reply.status_code) if reply.status_code >= 400 else None
        return reply.status_code, reply.content, kind

    def choose(request: Request) -> Route:
        candidate, weight = state["candidate"], state["weight"]
        if candidate is None or weight <= 0:
            return state["stable"]
        key = request.headers.get(state["sticky_header"])
        draw = sticky_unit(key) if key else rng.random()
        return candidate if draw < weight else state["stable"]

    def write(entry: dict) -> None:
        if log:
            log.write(json.dumps(entry, default=str) + "\n")

    def compared_rows(doc: Any) -> tuple[str, np.ndarray] | None:
        """The compared output of an answer as an array of rows, or None."""
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not outputs:
            return None
        wanted = state["compare"] or outputs[0].get("name")
        for output in outputs:
            if output.get("name") == wanted:
                data = np.asarray(output.get("data"), dtype=object).ravel()
                shape = output.get("shape") or [len(data)]
                rows = int(shape[0]) if shape and int(shape[0]) > 0 else len(data)
                if rows == 0 or data.size % rows:
                    return None
                return wanted, data.reshape(rows, -1)
        return None

    def count_values(route: Route, doc: Any) -> None:
        found = compared_rows(doc)
        if found is None:
            return
        name, rows = found
        if rows.shape[1] != 1 or any(isinstance(v, float) for v in rows[:, 0]):
            return  # counts make sense for labels and class indices only
        seen = seen_values.setdefault(route.name, set())
        values, counts = np.unique(rows[:, 0].astype(str), return_counts=True)
        for value, n in zip(values, counts, strict=True):
            if value in seen or len(seen) < MAX_OUTPUT_VALUES:
                seen.add(value)
                m_values.labels(state["model"], route.name, name, value).inc(int(n))

    def disagreements(primary: Any, shadow: Any) -> tuple[int, int] | None:
        a, b = compared_rows(primary), compared_rows(shadow)
        if a is None:
            return None
        if b is None or a[0] != b[0] or a[1].shape != b[1].shape:
            return len(a[1]), len(a[1])  # the shadow answered something else entirely
        x, y = a[1], b[1]
        try:
            differ = np.abs(x.astype(float) - y.astype(float)) > state["tolerance"]
        except (TypeError, ValueError):
            differ = x.astype(str) != y.astype(str)
        return len(x), int(differ.any(axis=1).sum())

    async def mirror(route: Route, content: bytes, request_id: str, doc: Any, primary: asyncio.Future,
                     session: str | None) -> None:
        start = time.perf_counter()
        status, body, kind = await call(route, content, "shadow")
        latency = time.perf_counter() - start
        model = state["model"]
        s_requests.labels(model, route.name).inc()
        s_latency.labels(model, route.name).observe(latency)
        answer = _json(body) if kind is None else None
        if kind is not None:
            s_errors.labels(model, route.name, kind).inc()
        try:  # the primary answer normally came long ago; never wait for it longer than it may take
            primary_name, primary_doc = await asyncio.wait_for(asyncio.shield(primary), state["timeout"])
        except TimeoutError:
            primary_name, primary_doc = None, None
        if answer is not None and primary_doc is not None:
            compared = disagreements(primary_doc, answer)
            if compared is not None:
                s_rows.labels(model, route.name, primary_name).inc(compared[0])
                s_disagree.labels(model, route.name, primary_name).inc(compared[1])
        write({"time": time.time(), "id": request_id, "model": model, "version": route.name, "role": "shadow",
               "session": session, "status": status, "latency": latency, "inputs": _inputs(doc),
               "outputs": answer.get("outputs") if isinstance(answer, dict) else None})

    async def infer(request: Request) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        if model != state["model"]:
            return await forward(request)
        routes = {r.name: r for r in (state["stable"], state["candidate"], state["shadow"]) if r}
        if version is not None and version not in routes:
            return await forward(request)
        arrived = time.perf_counter()
        body = await request.body()
        doc = _json(body)
        if isinstance(doc, dict):
            request_id = str(doc.get("id") or uuid.uuid4().hex)
            content = json.dumps({**doc, "id": request_id}).encode()
        else:  # not JSON: the server will say what is wrong with it
            request_id, content = uuid.uuid4().hex, body
        route = routes[version] if version is not None else choose(request)
        session = request.headers.get(state["sticky_header"])
        primary: asyncio.Future | None = None
        shadow = state["shadow"]
        if version is None and shadow is not None and rng.random() < state["mirror"]:
            if len(shadows) < MAX_SHADOW_IN_FLIGHT:
                primary = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(mirror(shadow, content, request_id, doc, primary, session))
                shadows.add(task)
                task.add_done_callback(shadows.discard)
            else:
                s_skipped.labels(state["model"]).inc()
        headers = {ROUTE_HEADER: route.name}
        status, reply, kind = await call(route, content, "primary")
        if kind == "unreachable" and state["fallback"] and route is state["candidate"]:
            m_requests.labels(model, route.name).inc()
            m_errors.labels(model, route.name, kind).inc()
            headers[FALLBACK_HEADER] = route.name
            route = state["stable"]
            headers[ROUTE_HEADER] = route.name
            status, reply, kind = await call(route, content, "primary")
        latency = time.perf_counter() - arrived
        m_requests.labels(model, route.name).inc()
        m_latency.labels(model, route.name).observe(latency)
        answer = _json(reply) if kind is None else None
        if kind is not None:
            m_errors.labels(model, route.name, kind).inc()
        else:
            count_values(route, answer)
        if primary is not None:
            primary.set_result((route.name, answer))
        write({"time": time.time(), "id": request_id, "model": model, "version": route.name, "role": "primary",
               "session": session, "status": status, "latency": latency, "inputs": _inputs(doc),
               "outputs": answer.get("outputs") if isinstance(answer, dict) else None})
        return Response(reply, status_code=status, media_type="application/json", headers=headers)

    async def forward(request: Request) -> Response:
        """Any other call goes to stable's server unchanged."""
        url = state["stable"].url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            reply = await clients["primary"].request(request.method, url, content=await request.body(),
                                                     headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            return Response(_error(f"stable is unreachable: {e}"), status_code=502, media_type="application/json")
        return Response(reply.content, status_code=reply.status_code,
                        media_type=reply.headers.get("content-type"))

    async def admin_state(request: Request) -> Response:
        if request.method == "POST":
            changes = _json(await request.body())
            if not isinstance(changes, dict) or set(changes) - set(_SETTABLE):
                return JSONResponse({"error": f"send a JSON object with some of {', '.join(_SETTABLE)}"}, 400)
            try:
                new = _validated({**state, **changes})
            except (TypeError, ValueError) as e:
                return JSONResponse({"error": str(e)}, 400)
            state.update(new)  # one step of the event loop: no request sees half a change
            show_weights()
        return JSONResponse({**_plain(state), "shadows_in_flight": len(shadows)})

    async def health(request: Request) -> Response:
        return Response("ok")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Endpoint("/v2/models/{model}/infer", infer, methods=["POST"]),
            Endpoint("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
            Endpoint("/admin/state", admin_state, methods=["GET", "POST"]),
            Endpoint("/admin/health", health),
            Endpoint("/metrics", metrics),
            Endpoint("/{path:path}", forward, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _inputs(doc: Any) -> Any:
    return doc.get("inputs") if isinstance(doc, dict) else None


def _serve(workdir: Path) -> int:
    """Run the router until the owner asks it to stop or goes away (the pattern of ``labkit.serving``)."""
    import uvicorn

    config = json.loads((workdir / "config.json").read_text())
    server = uvicorn.Server(uvicorn.Config(build_app(config), host=HOST, port=config["port"], log_level="warning",
                                           access_log=False, loop="asyncio", lifespan="on"))
    owner = os.getppid()

    def watch() -> None:
        reason = watch_owner(owner)
        server.should_exit = True
        if reason == "orphaned":  # nobody is left to wait for an orderly end
            threading.Timer(3, os._exit, (0,)).start()

    threading.Thread(target=watch, daemon=True).start()
    server.run()
    print("labkit: router stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1])))

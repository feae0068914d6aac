"""labkit.router and labkit.rollout against a real MLServer (one for the module, plus one to kill)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import joblib
import numpy as np
import pytest
from conftest import wait_gone
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binomtest
from sklearn.ensemble import RandomForestClassifier

import labkit
from labkit import load, metrics, rollout
from labkit.client import Client
from labkit.router import ROUTE_HEADER, Route, Router
from labkit.serving import Server

# A stable answer may take at most this long while its shadow sleeps SLOW_DELAY s and times out after
# SHADOW_TIMEOUT s: a router that waited for the shadow would take at least SHADOW_TIMEOUT.
STABLE_BOUND = 1.5
SHADOW_TIMEOUT = 2.0
SLOW_DELAY = 4.0


def write_model(folder, model, version, class_names, **extra):
    folder.mkdir(parents=True)
    joblib.dump(model, folder / "model.joblib")
    for runtime in ("diagnosis_runtime.py", "faulty_runtime.py"):
        shutil.copy(labkit.course.runtimes() / runtime, folder)
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "diagnosis", "implementation": "faulty_runtime.FaultyDiagnosisModel",
        "parameters": {"uri": "./model.joblib", "version": version,
                       "extra": {"class_names": class_names, **extra}}}))


@pytest.fixture(scope="module")
def models(dataset, tmp_path_factory):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(dataset.X, dataset.y)
    v2 = RandomForestClassifier(n_estimators=20, max_depth=3, random_state=0).fit(dataset.X, dataset.y)
    return v1, v2


@pytest.fixture(scope="module")
def server(dataset, models, tmp_path_factory):
    repo = tmp_path_factory.mktemp("router-repo")
    names = list(dataset.target_names)
    v1, v2 = models
    write_model(repo / "v1", v1, "v1", names)
    write_model(repo / "v2", v2, "v2", names)
    write_model(repo / "slow", v2, "slow", names, delay=SLOW_DELAY)
    write_model(repo / "broken", v2, "broken", names, error_rate=1.0)
    with Server(repo, settings={"parallel_workers": 0}) as server:
        yield server


@pytest.fixture(scope="module")
def rows(dataset):
    return [dataset.X.to_numpy()[i:i + 1] for i in range(40)]


def counts(router):
    scrape = metrics.scrape(router)
    return {s.labels["version"]: s.value for s in scrape.samples if s.name == "router_requests_total"}


def test_weighted_shares_within_binomial_tolerance(server, rows):
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2"), weight=0.3, seed=1) as router:
        result = load.run(router, "diagnosis", rows, concurrency=8, requests=2000, duration=120, warmup=0,
                          progress=False)
        assert result.ok == 2000 and not result.errors
        seen = counts(router)
    assert seen["v1"] + seen["v2"] == 2000
    assert binomtest(int(seen["v2"]), 2000, 0.3).pvalue > 0.001, seen


def test_sticky_clients_never_switch_and_only_move_to_the_candidate(server, rows, tmp_path):
    body = json.loads(labkit.client.rest_body(rows[0]))
    payloads = tmp_path / "payloads.jsonl"
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2"), weight=0.4,
                payload_log=payloads) as router, httpx.Client(base_url=router.url, trust_env=False) as http:
        def route_of(client):
            reply = http.post("/v2/models/diagnosis/infer", json=body, headers={"x-session-id": client})
            assert reply.status_code == 200
            assert reply.json()["model_version"] == reply.headers[ROUTE_HEADER]
            return reply.headers[ROUTE_HEADER]

        clients = [f"user-{i}" for i in range(60)]
        first = {c: route_of(c) for c in clients}
        for _ in range(2):
            assert {c: route_of(c) for c in clients} == first
        assert 0 < sum(v == "v2" for v in first.values()) < 60
        router.set_weight(0.8)
        later = {c: route_of(c) for c in clients}
    assert all(later[c] == "v2" for c in clients if first[c] == "v2"), "a client on the candidate moved back"
    assert sum(v == "v2" for v in later.values()) > sum(v == "v2" for v in first.values())
    logged = [json.loads(line) for line in payloads.read_text().splitlines()]
    assert len(logged) == 4 * len(clients) and {e["session"] for e in logged} == set(clients)
    assert all(e["version"] == first[e["session"]] for e in logged[:3 * len(clients)])


@pytest.mark.parametrize("shadow", ["slow", "broken", "unreachable"])
def test_a_mirrored_call_never_changes_or_delays_the_stable_answer(server, rows, shadow, tmp_path):
    url = "http://127.0.0.1:9" if shadow == "unreachable" else server
    payloads = tmp_path / "payloads.jsonl"
    direct = Client(server)
    with Router("diagnosis", Route("v1", server, "v1"), shadow=Route(shadow, url, shadow), mirror=1.0,
                shadow_timeout=SHADOW_TIMEOUT, payload_log=payloads) as router, Client(router) as client:
        for x in rows[:8]:
            start = time.perf_counter()
            answer = client.infer("diagnosis", x)
            assert time.perf_counter() - start < STABLE_BOUND
            assert answer.model_version == "v1"
            assert np.array_equal(labkit.client.decode_outputs(answer)["probabilities"],
                                  direct.predict("diagnosis", x, version="v1")["probabilities"])
        deadline = time.monotonic() + SHADOW_TIMEOUT + 3  # the mirrored calls time out or fail on their own
        while router.state()["shadows_in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        scrape = metrics.scrape(router)
    direct.close()
    assert scrape.value("router_shadow_requests_total", version=shadow) == 8
    kind = {"slow": "timeout", "broken": "500", "unreachable": "unreachable"}[shadow]
    assert scrape.value("router_shadow_errors_total", version=shadow, status=kind) == 8
    assert scrape.value("router_requests_total", version=shadow) == 0
    logged = [json.loads(line) for line in payloads.read_text().splitlines()]
    assert sorted(e["role"] for e in logged) == ["primary"] * 8 + ["shadow"] * 8
    assert {e["id"] for e in logged if e["role"] == "shadow"} == {e["id"] for e in logged if e["role"] == "primary"}


def test_shadow_disagreement_counts_the_rows_that_differ(server, dataset, models):
    X = dataset.X[:120]
    v1, v2 = models
    expected = int((v1.predict(X) != v2.predict(X)).sum())
    X = X.to_numpy()
    assert expected > 0, "the two versions must disagree somewhere for this test to mean anything"
    with Router("diagnosis", Route("v1", server, "v1"), shadow=Route("v2", server, "v2"), compare="label") \
            as router, Client(router) as client:
        for batch in np.array_split(X, 12):
            client.infer("diagnosis", batch)
        deadline = time.monotonic() + 5
        while router.state()["shadows_in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        scrape = metrics.scrape(router)
    assert scrape.value("router_shadow_rows_total", version="v2", primary="v1") == 120
    assert scrape.value("router_shadow_disagreements_total", version="v2", primary="v1") == expected


def test_metrics_parse_with_prometheus_client(server, rows):
    with Router("diagnosis", Route("v1", server, "v1"), Route("broken", server, "broken"), weight=0.5) as router:
        with Client(router) as client:
            for x in rows[:10]:
                try:
                    client.infer("diagnosis", x)
                except labkit.client.InferenceServerError as e:
                    assert e.status == 500
        text = httpx.get(router.metrics_url, trust_env=False).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["router_requests"].type == "counter"
    assert families["router_request_duration_seconds"].type == "histogram"
    assert families["router_weight"].type == "gauge"
    errors = [s for s in families["router_errors"].samples if s.name == "router_errors_total"]
    requests = {s.labels["version"]: s.value for s in families["router_requests"].samples}
    assert errors and all(s.labels == {"model": "diagnosis", "version": "broken", "status": "500"} for s in errors)
    assert errors[0].value == requests["broken"] > 0


def test_no_request_is_lost_while_weights_change_under_load(server, rows):
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2")) as router:
        done = {}
        worker = threading.Thread(target=lambda: done.update(result=load.run(
            router, "diagnosis", rows, concurrency=8, requests=None, duration=3, warmup=0, progress=False)))
        worker.start()
        rng = np.random.default_rng(0)
        changes = 0
        while worker.is_alive():
            router.update(weight=float(rng.uniform()), stable=Route("v1", server, "v1"))
            changes += 1
            time.sleep(0.05)
        worker.join()
        result = done["result"]
        seen = counts(router)
    assert changes > 10
    assert result.ok > 100 and not result.errors
    assert result.ok <= sum(seen.values()) <= result.ok + result.cut_off
    assert seen["v1"] > 0 and seen["v2"] > 0


def test_killing_the_candidate_mid_rollout_rolls_back(server, dataset, models, rows, tmp_path):
    repo = tmp_path / "candidate"
    write_model(repo / "v2", models[1], "v2", list(dataset.target_names))
    candidate = Server(repo, settings={"parallel_workers": 0}).start()
    audit = tmp_path / "audit.jsonl"
    try:
        with Router("diagnosis", Route("v1", server, "v1"), Route("v2", candidate, "v2")) as router:
            plan = rollout.Rollout(router, [rollout.set_weight(0.5)] + [rollout.analyse(0.7)] * 8,
                                   rollout.Guardrails(min_requests=10, max_latency=2.0), audit=audit)
            plan.start()
            threading.Timer(1.0, os.killpg, (candidate.pid, signal.SIGKILL)).start()  # a crash
            result = load.run(router, "diagnosis", rows, concurrency=4, requests=None, duration=30,
                              stop=plan.ended, progress=False)
            assert plan.wait(30) == rollout.ROLLED_BACK
            assert router.state()["weight"] == 0
    finally:
        candidate.stop()
    assert not result.errors, "the stable version answers what the candidate could not"
    assert "unreachable" in plan.reason
    entries = rollout.read_audit(audit)
    assert [e["action"] for e in entries][-2:] == ["analyse", "rollback"]
    assert entries[-2]["outcome"] == rollout.FAILURE and entries[-1]["weight"] == 0


def test_rollout_promotes_a_good_candidate_and_pauses_without_traffic(server, rows):
    steps = [rollout.set_weight(0.3), rollout.analyse(1.0, longest=1.5), rollout.set_weight(0.6),
             rollout.analyse(1.0, longest=1.5)]
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2")) as router:
        idle = rollout.Rollout(router, steps, rollout.Guardrails(min_requests=10))
        assert idle.run() == rollout.PAUSED and "too little traffic" in idle.reason
        assert idle.abort("no traffic to judge by") == rollout.ABORTED and router.state()["weight"] == 0
        plan = rollout.Rollout(router, steps, rollout.Guardrails(min_requests=10, max_latency=2.0)).start()
        result = load.run(router, "diagnosis", rows, concurrency=4, requests=None, duration=30, stop=plan.ended,
                          progress=False)
        assert result.stopped_by == "interrupted", "the load ends when the rollout decides"
        assert plan.wait(30) == rollout.PROMOTED, plan.reason
        state = router.state()
    assert state["stable"]["name"] == "v2" and state["candidate"] is None
    assert [v.outcome for v in plan.verdicts] == [rollout.SUCCESS, rollout.SUCCESS]


def test_blue_green_switches_and_switches_back_on_a_failed_check(server, rows):
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2")) as router:
        smoke = rollout.smoke_check("diagnosis", rows[0])
        verdict = rollout.blue_green(router, {"smoke": smoke})
        assert verdict.outcome == rollout.SUCCESS and router.state()["stable"]["name"] == "v2"
        router.update(candidate=Route("broken", server, "broken"))
        verdict = rollout.blue_green(router, {"smoke": smoke})
        assert verdict.outcome == rollout.FAILURE and "not switched" in verdict.reasons[0]
        assert router.state()["stable"]["name"] == "v2"


def test_blue_green_without_traffic_after_the_switch_waits_for_a_person(server, rows, tmp_path):
    """No traffic is not good news: a thin window after the switch is inconclusive, never a success."""
    audit = tmp_path / "audit.jsonl"
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2")) as router:
        def trickle():  # 3 requests during the window, fewer than min_requests
            with Client(router) as client:
                for x in rows[:3]:
                    time.sleep(0.1)
                    client.infer("diagnosis", x)

        sender = threading.Thread(target=trickle)
        sender.start()
        start = time.monotonic()
        verdict = rollout.blue_green(router, {"smoke": rollout.smoke_check("diagnosis", rows[0])},
                                     analyse_seconds=0.3, longest=0.8, guardrails=rollout.Guardrails(min_requests=10),
                                     audit=audit)
        took = time.monotonic() - start
        sender.join()
        state = router.state()
    assert verdict.outcome == rollout.INCONCLUSIVE, verdict
    assert "too little traffic" in verdict.reasons[0] and "router.switch()" in verdict.reasons[0]
    assert 0.8 <= took < 10, "the window grows up to longest before it gives up"
    assert state["stable"]["name"] == "v2" and state["candidate"]["name"] == "v1" and state["weight"] == 0
    entries = rollout.read_audit(audit)
    assert [e["action"] for e in entries] == ["precheck", "switch", "postcheck", "pause"]
    assert entries[2]["outcome"] == rollout.INCONCLUSIVE and entries[2]["window"]["requests"] < 10


def test_admin_api_refuses_bad_changes(server):
    with Router("diagnosis", Route("v1", server, "v1"), Route("v2", server, "v2"), weight=0.2) as router:
        for bad in ({"weight": 1.5}, {"weight": "half"}, {"colour": "blue"}, {"stable": {"url": "x"}}):
            reply = httpx.post(router.url + "/admin/state", json=bad, trust_env=False)
            assert reply.status_code == 400, bad
        with pytest.raises(ValueError):
            router.set_weight(-0.1)
        assert router.state()["weight"] == 0.2
        assert httpx.get(router.url + "/v2/health/ready", trust_env=False).status_code == 200


OWNER = """
import sys, time
from labkit.router import Route, Router
router = Router("m", Route("stable", "http://127.0.0.1:9")).start()
print(router.pid, flush=True)
time.sleep(60)
"""


def test_router_dies_with_its_owner():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(owner.stdout.readline())
        assert wait_gone([pid], 0.5) == [pid]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert wait_gone([pid], 5.0) == []


def test_router_dies_with_its_kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        out = []
        code = ("from labkit.router import Route, Router\n"
                "router = Router('m', Route('stable', 'http://127.0.0.1:9')).start()\nprint(router.pid)")
        reply = kc.execute_interactive(code, timeout=60, output_hook=out.append)
        assert reply["content"]["status"] == "ok"
        pid = int("".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream").split()[-1])
        assert wait_gone([pid], 0.5) == [pid]
        km.restart_kernel(now=True)  # kills the kernel like a crash would
        assert wait_gone([pid], 5.0) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_judge_without_a_server():
    """Inconclusive below min_requests; every request failed (no latency) is a failure, not a pass; a model check
    that raises fails the candidate."""
    page = """# TYPE router_requests_total counter
router_requests_total{model="m",version="c"} %d
router_requests_total{model="m",version="s"} 100
# TYPE router_errors_total counter
router_errors_total{model="m",version="c",status="unreachable"} %d
"""
    before = metrics.parse(page % (0, 0), at=0.0)
    window = rollout.measure(before, metrics.parse(page % (5, 5), at=1.0), "m", "c", "s")
    assert rollout.judge(window, rollout.Guardrails(min_requests=10)).outcome == rollout.INCONCLUSIVE
    window = rollout.measure(before, metrics.parse(page % (50, 50), at=1.0), "m", "c", "s")
    assert window.error_rate == 1.0 and window.errors == {"unreachable": 50}
    verdict = rollout.judge(window, rollout.Guardrails(min_requests=10, max_error_rate=1.0))
    assert verdict.outcome == rollout.FAILURE and "latency" in verdict.reasons[0]
    healthy = rollout.measure(before, metrics.parse(page % (50, 0), at=1.0), "m", "c", "s")
    broken_check = {"broken": (lambda w: 1 / 0, 0.1)}
    verdict = rollout.judge(healthy, rollout.Guardrails(min_requests=10, max_latency=float("inf"),
                                                        model_checks=broken_check))
    assert verdict.outcome == rollout.FAILURE and any("ZeroDivisionError" in r for r in verdict.reasons)

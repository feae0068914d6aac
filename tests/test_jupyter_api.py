"""The labkit server extension's REST API, against a real JupyterLab, without a browser."""

import json
import os
import textwrap

import httpx
import pytest
from conftest import wait_gone
from running_lab import ROOT, jupyterlab

from labkit.checks import names
from labkit.jupyter import catalog, progress
from labkit.serving import Server, proxied_url, running_servers



@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyter-home")
    # base_url as on a JupyterHub, to show that the API and the proxy work under a prefix
    with jupyterlab(ROOT, home, base_url="/user/ada/") as running:
        yield running


def get(lab, path, **kwargs):
    return httpx.get(lab.api(path), headers=lab.auth, timeout=30, **kwargs)


def test_jupyterlab_does_not_ask_every_new_user_about_news(lab):
    # JupyterLab shows its "Would you like to get notified about official Jupyter news?" pop-up while the
    # setting fetchNews is "none", its own default; the course's settings (jupyter-config/overrides.d) make the
    # default "false" (and test_browser.py shows the pop-up gone in a real browser).
    reply = httpx.get(f"{lab.url}lab/api/settings/@jupyterlab/apputils-extension:notification", headers=lab.auth,
                      timeout=30)
    assert reply.status_code == 200, reply.text
    defaults = {name: spec["default"] for name, spec in reply.json()["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False
    assert "fetchNews" not in reply.json()["settings"]  # a default, which a user may still change


@pytest.mark.parametrize("path", ["labs", "progress", "servers", "servers/1/logs"])
def test_unauthenticated_requests_are_refused(lab, path):
    assert httpx.get(lab.api(path), timeout=30).status_code == 403
    wrong = {"Authorization": "token " + "0" * 32}
    assert httpx.get(lab.api(path), headers=wrong, timeout=30).status_code == 403


def test_unauthenticated_stop_is_refused_and_the_server_keeps_running(lab, sklearn_repo):
    with Server(sklearn_repo, settings={"parallel_workers": 0}) as server:
        supervisor = server._supervisor.pid
        assert httpx.delete(lab.api(f"servers/{supervisor}"), timeout=30).status_code == 403
        assert server.running


def test_labs_are_listed_in_order_with_their_exercises(lab):
    reply = get(lab, "labs")
    assert reply.status_code == 200
    labs = reply.json()["labs"]
    on_disk = sorted(p.name for p in (ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))
    assert [entry["file"] for entry in labs] == on_disk  # every lab, in order, found by itself
    welcome = labs[0]
    assert welcome["path"] == "labs/00_welcome.ipynb"
    assert welcome["title"].startswith("00")
    assert [e["name"] for e in welcome["exercises"]] == names("00")
    for entry in labs:
        assert [e["name"] for e in entry["exercises"]] == names(entry["lab"])


def test_progress_recorded_in_a_real_kernel_shows_in_the_api(lab):
    """A check run in a kernel records its verdict; the API reports it per lab and exercise."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, LABKIT_PROGRESS_FILE=str(lab.progress_file))
    env.pop("LABKIT_PROGRESS", None)
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        code = textwrap.dedent("""
            from labkit import check
            wrong = check("00.error_rate", lambda codes: 0.5)
            right = check("00.error_rate", lambda codes: sum(c >= 400 for c in codes) / len(codes) if codes else 0.0)
            assert (wrong.status, right.status) == ("failed", "passed"), (wrong, right)
        """)
        reply = kc.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    recorded = get(lab, "progress").json()["exercises"]["00.error_rate"]
    assert recorded["status"] == "passed" and recorded["attempts"] == 2 and recorded["ever_passed"]
    welcome = next(entry for entry in get(lab, "labs").json()["labs"] if entry["lab"] == "00")
    exercise = next(e for e in welcome["exercises"] if e["name"] == "00.error_rate")
    assert exercise["status"] == "passed"
    assert exercise["points_scored"] == exercise["points"] > 0


def test_running_servers_are_listed_healthy_and_stoppable(lab, sklearn_repo):
    server = Server(sklearn_repo, settings={"parallel_workers": 0}).start()
    try:
        supervisor, mlserver = server._supervisor.pid, server.pid
        listed = {s["id"]: s for s in get(lab, "servers").json()["servers"]}
        assert supervisor in listed
        entry = listed[supervisor]
        assert entry["http_port"] == server.http_port and entry["grpc_port"] == server.grpc_port
        assert entry["models"] == ["cancer"] and entry["ready"] is True
        assert entry["repository"] == str(sklearn_repo.resolve())
        assert entry["owner_pid"] == os.getpid()

        logs = get(lab, f"servers/{supervisor}/logs", params={"lines": 5}).json()["log"]
        assert 0 < len(logs.splitlines()) <= 5
        assert get(lab, f"servers/{supervisor}/logs", params={"lines": "many"}).status_code == 400

        stop = httpx.delete(lab.api(f"servers/{supervisor}"), headers=lab.auth, timeout=30)
        assert stop.status_code == 204
        assert wait_gone([mlserver]) == []
        assert not server.running and server not in running_servers()
        assert supervisor not in {s["id"] for s in get(lab, "servers").json()["servers"]}
        again = httpx.delete(lab.api(f"servers/{supervisor}"), headers=lab.auth, timeout=30)
        assert again.status_code == 404
    finally:
        server.stop()


def test_only_lab_servers_can_be_stopped(lab):
    """The stop endpoint refuses any pid that is not a labkit supervisor, e.g. the test process itself."""
    reply = httpx.delete(lab.api(f"servers/{os.getpid()}"), headers=lab.auth, timeout=30)
    assert reply.status_code == 404
    assert get(lab, f"servers/{os.getpid()}/logs").status_code == 404


def test_browser_links_work_through_the_jupyter_proxy(lab, sklearn_repo, monkeypatch):
    """Under a hub prefix, Server's links go through jupyter-server-proxy and answer there."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    origin = lab.url.split("/user/ada/")[0]
    with Server(sklearn_repo, settings={"parallel_workers": 0}) as server:
        ready = server.browser_url("/v2/health/ready")
        assert ready == f"/user/ada/proxy/{server.http_port}/v2/health/ready"
        assert httpx.get(origin + ready, headers=lab.auth, timeout=30).status_code == 200
        page = server._repr_html_()
        assert f"/user/ada/proxy/{server.http_port}/v2/docs/dataplane.json" in page
        assert '/v2/docs"' not in page  # never the Swagger page, which breaks behind the proxy
        api = httpx.get(origin + server.browser_url("/v2/docs/dataplane.json"), headers=lab.auth, timeout=30)
        assert api.status_code == 200 and "openapi" in api.json()
        metrics = httpx.get(origin + proxied_url(server.metrics_port, "/metrics"), headers=lab.auth, timeout=30)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        assert server.url.startswith("http://127.0.0.1:")  # the kernel itself keeps calling loopback


def test_links_are_direct_without_a_hub(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert proxied_url(8080, "v2/health/ready") == "http://127.0.0.1:8080/v2/health/ready"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/")
    assert proxied_url(8080, "/metrics") == "/proxy/8080/metrics"


def test_new_labs_are_discovered_with_titles(tmp_path):
    (tmp_path / "labs").mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "source": ["Intro\n", "# 98 · Something new\n"]}]}
    (tmp_path / "labs" / "98_something_new.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "labs" / "notes.ipynb").write_text("{}")
    (tmp_path / "labs" / "99_broken.ipynb").write_text("not json")
    folder = catalog.labs_folder(tmp_path)
    assert folder == tmp_path / "labs"
    found = catalog.discover_labs(folder)
    assert [(lab["lab"], lab["title"]) for lab in found] == [("98", "98 · Something new"), ("99", "99 broken")]
    assert catalog.labs_folder(tmp_path / "labs") == tmp_path / "labs"
    assert catalog.labs_folder(tmp_path / "elsewhere") is None
    assert catalog.exercises(["98"]) == {"98": []}  # a lab with no checks (09 and 10 now have theirs)


def test_progress_file_is_empty_not_an_error_when_missing_or_corrupt(tmp_path):
    path = tmp_path / "progress.json"
    assert progress.load(path) == progress.empty()
    path.write_text("{half a file")
    assert progress.load(path) == progress.empty()

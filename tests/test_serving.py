import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import pids_alive, wait_gone

from labkit.serving import Server, ServerError, model_names, running_servers


def tree(pid):
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_start_stop_leaves_nothing_behind(sklearn_repo):
    before = snapshot(sklearn_repo)
    with Server(sklearn_repo) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
        assert httpx.get(server.url + "/v2/models/cancer/ready").status_code == 200
        assert server in running_servers()
        pids = tree(server.pid)
        assert len(pids) >= 2, "parallel_workers defaults to 1: main process plus a worker"
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        assert b"TF_USE_LEGACY_KERAS=1" in environ
        assert "Uvicorn running" in server.logs(200) or "HTTP server running" in server.logs(200)
        workdir = server.workdir
    assert wait_gone(pids) == []
    assert not workdir.exists()
    assert snapshot(sklearn_repo) == before, "the model repository was written to"


def test_object_api_and_student_settings_json(sklearn_repo, tmp_path):
    # A student's settings.json keeps its other settings, but not host and ports.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cancer").symlink_to(sklearn_repo / "cancer")
    (repo / "settings.json").write_text(json.dumps({"http_port": 8080, "host": "0.0.0.0", "parallel_workers": 0}))
    server = Server(repo).start()
    try:
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        assert tree(server.pid) == [server.pid], "parallel_workers 0 from the student's settings.json"
        listening = {c.laddr for c in psutil.Process(server.pid).net_connections() if c.status == "LISTEN"}
        assert listening and all(addr.ip in ("127.0.0.1", "::ffff:127.0.0.1") for addr in listening)
    finally:
        server.stop()
    assert not server.running


def test_model_that_fails_to_load_gives_log_tail(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model-settings.json").write_text(
        json.dumps({"name": "broken", "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./missing.joblib"}})
    )
    start = time.monotonic()
    with pytest.raises(ServerError) as error:
        Server(tmp_path, timeout=45).start()
    assert time.monotonic() - start < 45
    assert "Last lines of its log" in str(error.value)
    assert "missing.joblib" in str(error.value)


def test_broken_model_folder_is_reported_at_once(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model-settings.json").write_text("{not json")
    with pytest.raises(ServerError, match="model-settings.json is not valid JSON"):
        Server(tmp_path).start()
    with pytest.raises(ServerError, match="is not a folder"):
        Server(tmp_path / "nowhere").start()


def test_busy_port_is_refused_quickly(sklearn_repo):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ServerError, match=f"port {port}.*already in use"):
            Server(sklearn_repo, http_port=port).start()
        assert time.monotonic() - start < 2


def test_two_servers_side_by_side_keep_their_own_metrics(sklearn_repo):
    row = {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}]}
    with Server(sklearn_repo, settings={"parallel_workers": 0}) as a, \
            Server(sklearn_repo, settings={"parallel_workers": 0}) as b:
        assert {a.http_port, a.grpc_port, a.metrics_port}.isdisjoint({b.http_port, b.grpc_port, b.metrics_port})
        assert a.workdir != b.workdir
        for _ in range(5):
            assert httpx.post(a.url + "/v2/models/cancer/infer", json=row).status_code == 200
        assert httpx.post(b.url + "/v2/models/cancer/infer", json=row).status_code == 200

        def requests_seen(server):
            text = httpx.get(server.metrics_url).text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("model_infer_request_success_total")
            )

        assert requests_seen(a) == 5
        assert requests_seen(b) == 1


OWNER = textwrap.dedent(
    """
    import json, sys, time, psutil
    from labkit.serving import Server
    server = Server(sys.argv[1]).start()
    pids = [server.pid] + [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
    print(json.dumps(pids), flush=True)
    time.sleep(600)
    """
)


def test_no_orphans_after_owner_is_killed(sklearn_repo):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(sklearn_repo)], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(owner.stdout.readline())
        supervisor = psutil.Process(pids[0]).parent().pid
        assert len(pids) >= 2
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert wait_gone(pids + [supervisor], 5.0) == []


def test_no_orphans_after_kernel_restart_and_interrupt_spares_server(sklearn_repo):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = (
            "from labkit.serving import Server\n"
            f"server = Server({str(sklearn_repo)!r}).start()\n"
            "import psutil\n"
            "print([server.pid] + [c.pid for c in psutil.Process(server.pid).children(recursive=True)])"
        )
        out = []
        reply = kc.execute_interactive(code, timeout=90, output_hook=lambda m: out.append(m))
        assert reply["content"]["status"] == "ok"
        text = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
        pids = json.loads(text.strip().splitlines()[-1])

        kc.execute("import time; time.sleep(30)")
        time.sleep(0.5)
        km.interrupt_kernel()  # SIGINT to the kernel's process group
        time.sleep(1.5)
        assert pids_alive(pids) == pids, "an interrupt must not stop the server"

        km.restart_kernel(now=True)  # kills the kernel like a crash would
        assert wait_gone(pids, 5.0) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_settings_cannot_override_managed_keys(sklearn_repo):
    with pytest.raises(ValueError, match="http_port"):
        Server(sklearn_repo, settings={"http_port": 1234})


def test_env_is_passed_on(sklearn_repo):
    with Server(sklearn_repo, settings={"parallel_workers": 0}, env={"LABKIT_TEST_MARK": "42"}) as server:
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        assert b"LABKIT_TEST_MARK=42" in environ
        assert os.environ.get("LABKIT_TEST_MARK") is None


def test_two_kernels_each_with_a_server_then_shut_down(sklearn_repo):
    from jupyter_client.manager import start_new_kernel

    code = (
        "import json, httpx, psutil\n"
        "from labkit.serving import Server\n"
        f"server = Server({str(sklearn_repo)!r}).start()\n"
        "row = {'inputs': [{'name': 'x', 'shape': [1, 30], 'datatype': 'FP64', 'data': [1.0] * 30}]}\n"
        "status = httpx.post(server.url + '/v2/models/cancer/infer', json=row).status_code\n"
        "pids = [server.pid] + [c.pid for c in psutil.Process(server.pid).children(recursive=True)]\n"
        "print(json.dumps({'ports': [server.http_port, server.grpc_port, server.metrics_port],"
        " 'status': status, 'pids': pids}))"
    )
    kernels = [start_new_kernel(kernel_name="python3") for _ in range(2)]
    seen = []
    try:
        for _, kc in kernels:
            kc.execute(code)
        for _, kc in kernels:
            while True:
                msg = kc.get_iopub_msg(timeout=90)
                if msg["msg_type"] == "stream" and msg["content"]["text"].startswith("{"):
                    seen.append(json.loads(msg["content"]["text"]))
                    break
                assert msg["msg_type"] != "error", msg["content"]
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=False)  # a polite shutdown: the kernel's atexit stops its server
    assert [s["status"] for s in seen] == [200, 200]
    assert set(seen[0]["ports"]).isdisjoint(seen[1]["ports"])
    assert wait_gone(seen[0]["pids"] + seen[1]["pids"], 5.0) == []


def test_server_outlives_its_variable(sklearn_repo):
    import gc

    url = Server(sklearn_repo, settings={"parallel_workers": 0}).start().url
    gc.collect()
    time.sleep(1)  # the supervisor polls its owner every 0.5 s
    try:
        assert httpx.get(url + "/v2/health/ready").status_code == 200
    finally:
        for server in running_servers():
            if server.url == url:
                server.stop()
    assert all(server.url != url for server in running_servers())


def test_model_names_follow_linked_folders_as_mlserver_does(tmp_path):
    """Checks serve a student's folder through a link; the model is named after the link when unnamed."""
    named, unnamed = tmp_path / "named", tmp_path / "unnamed"
    for folder, settings in ((named, {"name": "cancer"}), (unnamed, {})):
        folder.mkdir()
        (folder / "model-settings.json").write_text(json.dumps(settings))
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "a").symlink_to(named, target_is_directory=True)
    (repository / "b").symlink_to(unnamed, target_is_directory=True)
    assert model_names(repository) == ["cancer", "b"]

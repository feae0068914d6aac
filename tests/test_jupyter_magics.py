"""%load_ext labkit: the %mlserver and %%model_settings magics, in a real IPython shell."""

import json

import httpx
import pytest
from conftest import wait_gone
from IPython.testing.globalipapp import start_ipython

from labkit.serving import Server, running_servers


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    shell.run_line_magic("load_ext", "labkit")
    return shell


def test_start_list_logs_stop(ip, sklearn_repo, capsys):
    server = ip.run_line_magic("mlserver", f"start {sklearn_repo} --workers 0")
    try:
        assert isinstance(server, Server) and server in running_servers()
        assert httpx.get(server.url + "/v2/models/cancer/ready").status_code == 200
        assert f"REST {server.url}" in capsys.readouterr().out

        ip.run_line_magic("mlserver", "list")
        listing = capsys.readouterr().out
        assert str(server.http_port) in listing and "cancer" in listing

        ip.run_line_magic("mlserver", f"logs {server.http_port} -n 3")
        assert 0 < len(capsys.readouterr().out.strip().splitlines()) <= 3

        ip.run_line_magic("mlserver", "stop 1")  # not a port of ours
        assert "no running server has REST port 1" in capsys.readouterr().out
        assert server.running

        pid = server.pid
        ip.run_line_magic("mlserver", "stop")  # the only one
        assert f"Stopped the server on REST port {server.http_port}" in capsys.readouterr().out
        assert not server.running and wait_gone([pid]) == []
    finally:
        server.stop()


def test_bad_arguments_print_usage_not_a_traceback(ip, tmp_path, capsys):
    ip.run_line_magic("mlserver", "")
    assert "%mlserver start REPOSITORY" in capsys.readouterr().out
    ip.run_line_magic("mlserver", "launch now")
    out = capsys.readouterr().out
    assert "invalid choice" in out and "usage:" in out
    ip.run_line_magic("mlserver", "start")
    assert "required: repository" in capsys.readouterr().out
    ip.run_line_magic("mlserver", f"start {tmp_path / 'missing'}")
    assert "is not a folder" in capsys.readouterr().out
    ip.run_line_magic("mlserver", "logs")
    assert "no lab server is running" in capsys.readouterr().out


def test_two_servers_need_a_port_to_pick_one(ip, sklearn_repo, capsys):
    first = ip.run_line_magic("mlserver", f"start {sklearn_repo} --workers 0")
    second = ip.run_line_magic("mlserver", f"start {sklearn_repo} --workers 0")
    try:
        capsys.readouterr()
        ip.run_line_magic("mlserver", "logs")
        assert "2 servers run" in capsys.readouterr().out
        ip.run_line_magic("mlserver", "stop all")
        assert not first.running and not second.running
    finally:
        first.stop()
        second.stop()


GOOD = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}


def test_model_settings_written_when_valid(ip, tmp_path, capsys):
    folder = tmp_path / "models" / "iris"
    ip.run_cell_magic("model_settings", str(folder), json.dumps(GOOD))
    written = folder / "model-settings.json"
    assert json.loads(written.read_text()) == GOOD
    assert f"Wrote {written}" in capsys.readouterr().out
    # a path to the file itself works too
    ip.run_cell_magic("model_settings", str(written), json.dumps({**GOOD, "max_batch_size": 4}))
    assert json.loads(written.read_text())["max_batch_size"] == 4


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("{'name': 'iris'}", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({**GOOD, "max_batch_size": "lots"}), "max_batch_size"),
        (json.dumps({**GOOD, "parameters": {"version": 3}}), "parameters.version"),
    ],
)
def test_invalid_model_settings_write_nothing(ip, tmp_path, capsys, cell, message):
    folder = tmp_path / "iris"
    ip.run_cell_magic("model_settings", str(folder), cell)
    out = capsys.readouterr().out
    assert out.startswith("%%model_settings:") and message in out
    assert not (folder / "model-settings.json").exists()


def test_model_settings_needs_a_folder(ip, capsys):
    ip.run_cell_magic("model_settings", "", json.dumps(GOOD))
    assert "say where to write" in capsys.readouterr().out

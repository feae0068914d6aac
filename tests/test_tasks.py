"""The README's two commands: they refuse an unsupported Python with one plain sentence, and stopping one
stops what it started."""

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.serving import free_port

ROOT = Path(__file__).resolve().parent.parent


def load_tasks():
    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", [(3, 9, 18, "final", 0), (3, 13, 0, "final", 0)])
def test_unsupported_python_gets_a_clear_message(monkeypatch, capsys, version):
    tasks = load_tasks()
    monkeypatch.setattr(sys, "version_info", version)
    monkeypatch.setattr(tasks, "venv", None)  # nothing may be created
    with pytest.raises(SystemExit) as stop:
        tasks.ensure_environment()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "needs Python 3.11 or 3.12" in err
    assert len(err.strip().splitlines()) == 1


def test_up_to_date_environment_is_not_reinstalled(monkeypatch, tmp_path):
    tasks = load_tasks()
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    stamp = tmp_path / ".labkit-install"
    stamp.write_text(tasks.install_fingerprint())
    monkeypatch.setattr(tasks.subprocess, "call", lambda *a, **k: pytest.fail("pip must not run"))
    assert tasks.ensure_environment(folder=tmp_path) == python
    stamp.write_text("stale")
    calls = []
    monkeypatch.setattr(tasks.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    tasks.ensure_environment(folder=tmp_path)
    assert any("constraints.txt" in cmd for cmd in calls)
    assert stamp.read_text() == tasks.install_fingerprint()


def test_supported_pythons_come_from_pyproject():
    tasks = load_tasks()
    assert tasks.supported_pythons() == [(3, 11), (3, 12)]
    assert tasks.spoken(tasks.supported_pythons()) == "3.11 or 3.12"


def test_a_too_new_python_is_told_what_to_install(monkeypatch, capsys):
    tasks = load_tasks()
    monkeypatch.setattr(sys, "version_info", (3, 13, 0, "final", 0))
    with pytest.raises(SystemExit):
        tasks.check_python()
    err = capsys.readouterr().err
    assert "brew install python@3.12" in err and "python3.12 tasks.py lab" in err and "no release" in err


def test_finds_this_python_and_not_a_missing_one(monkeypatch):
    tasks = load_tasks()
    found = tasks.find_python(sys.version_info[:2])
    assert found is not None
    monkeypatch.setenv("PYENV_ROOT", "/nonexistent")
    assert tasks.find_python((3, 99)) is None


def test_the_doctor_names_the_supported_pythons(monkeypatch):
    from labkit import cli

    monkeypatch.setattr(cli.platform, "python_version", lambda: "3.13.0")
    finding = next(f for f in cli.doctor(start_server=False).findings if f.name == "python")
    assert finding.status == "fail"
    assert "3.11 or 3.12" in finding.fix and "python3.12 tasks.py lab" in finding.fix


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_lab_command_stops_jupyterlab_too(tmp_path, stop):
    """`python3 tasks.py lab` runs JupyterLab as its child: a signal to the wrapper reaches JupyterLab, and the
    wrapper waits for it, so no JupyterLab is left running on its own."""
    tasks = load_tasks()
    if not tasks.PYTHON.exists():
        pytest.skip("no .venv: tasks.py lab needs the environment it creates")
    port, token = free_port(), secrets.token_hex(8)
    env = dict(os.environ, JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), LABKIT_PROGRESS="off")
    # What `tasks.py lab` does after setting up the environment, with the options of a test.
    wrapper = subprocess.Popen(
        [sys.executable, "-c", "import sys, tasks; sys.exit(tasks.lab(sys.argv[1:]))", "--no-browser",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
        cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert wrapper.poll() is None, "the lab command ended before JupyterLab answered"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"},
                             timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "JupyterLab did not answer"
            time.sleep(0.3)
        lab = psutil.Process(wrapper.pid).children(recursive=True)
        assert any("jupyter" in " ".join(p.cmdline()) for p in lab)
        wrapper.send_signal(stop)  # to the wrapper alone, not to its process group
        status = wrapper.wait(60)
        assert status == 128 + stop or status == 0
        _, alive = psutil.wait_procs(lab, timeout=30)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(wrapper.pid, signal.SIGKILL)  # only if the test failed: nothing may outlive it
        wrapper.wait()

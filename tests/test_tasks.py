"""The README's two commands refuse an unsupported Python with one plain sentence."""

import importlib.util
import sys
from pathlib import Path

import pytest

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
    assert "needs Python 3.10, 3.11 or 3.12" in err
    assert len(err.strip().splitlines()) == 1


def test_up_to_date_environment_is_not_reinstalled(monkeypatch, tmp_path):
    tasks = load_tasks()
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    stamp = tmp_path / ".labkit-install"
    stamp.write_text(tasks.install_fingerprint())
    monkeypatch.setattr(tasks, "PYTHON", python)
    monkeypatch.setattr(tasks, "STAMP", stamp)
    monkeypatch.setattr(tasks.subprocess, "call", lambda *a, **k: pytest.fail("pip must not run"))
    tasks.ensure_environment()
    stamp.write_text("stale")
    calls = []
    monkeypatch.setattr(tasks.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    tasks.ensure_environment()
    assert any("constraints.txt" in cmd for cmd in calls)
    assert stamp.read_text() == tasks.install_fingerprint()

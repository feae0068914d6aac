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
    assert tasks.supported_pythons() == [(3, 10), (3, 11), (3, 12)]
    assert tasks.spoken(tasks.supported_pythons()) == "3.10, 3.11 or 3.12"


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
    assert "3.10, 3.11 or 3.12" in finding.fix and "python3.12 tasks.py lab" in finding.fix

"""Progress: every check's verdict recorded per lab and exercise, atomically, never breaking a check."""

import json
import multiprocessing
import os

import pytest

import labkit.files

from labkit.checks import Feedback, check
from labkit.jupyter import progress


def feedback(name="00.error_rate", status="passed", points=1.0):
    return Feedback(name, status == "passed", points, 1.0, "message", None, status)


def test_store_keeps_latest_status_attempts_and_ever_passed(tmp_path):
    path = tmp_path / "sub" / "progress.json"
    progress.store(feedback(status="failed", points=0).record(), path)
    progress.store(feedback().record(), path)
    entry = progress.store(feedback(status="failed", points=0).record(), path)
    assert entry["status"] == "failed" and entry["attempts"] == 3 and entry["ever_passed"] is True
    assert entry["lab"] == "00"
    assert progress.load(path)["exercises"]["00.error_rate"] == entry
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".progress-")] == []  # no temp files left


def _hammer(path, lab, count):
    for i in range(count):
        progress.store(feedback(name=f"{lab}.ex{i}").record(), path)


def test_concurrent_writers_lose_nothing(tmp_path):
    """Two kernels checking at once: every result from both ends up in the file."""
    path = tmp_path / "progress.json"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(path, lab, 15)) for lab in ("01", "02", "03")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(progress.load(path)["exercises"]) == 45


def test_a_crash_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    progress.store(feedback().record(), path)
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(labkit.files.os, "fsync", crash)  # the new text is written, not yet on disk
    with pytest.raises(OSError):
        progress.store(feedback(name="01.request").record(), path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json", "progress.json.lock"]


def test_record_outside_a_kernel_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("LABKIT_PROGRESS_FILE", str(path))
    monkeypatch.delenv("LABKIT_PROGRESS", raising=False)  # tasks.py test sets it to off
    result = check("00.error_rate", lambda codes: 0.0)
    assert isinstance(result, Feedback) and not path.exists()


def test_record_never_breaks_a_check(tmp_path, monkeypatch, capsys):
    """Even when the progress file cannot be written, check() returns its verdict."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LABKIT_PROGRESS_FILE", str(blocker / "progress.json"))  # a path under a file
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    monkeypatch.setattr(progress, "_warned", False)
    monkeypatch.delenv("LABKIT_PROGRESS", raising=False)  # tasks.py test sets it to off
    result = check("00.error_rate", lambda codes: sum(c >= 400 for c in codes) / len(codes) if codes else 0.0)
    assert result.status == "passed"
    assert "could not record progress" in capsys.readouterr().err


def test_record_in_a_kernel_and_switched_off(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv("LABKIT_PROGRESS_FILE", str(path))
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    check("00.error_rate", ...)
    assert not path.exists()
    monkeypatch.delenv("LABKIT_PROGRESS")
    check("00.error_rate", ...)
    assert json.loads(path.read_text())["exercises"]["00.error_rate"]["status"] == "not_attempted"


def test_default_location_is_under_the_jupyter_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_PROGRESS_FILE", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    assert progress.progress_path() == tmp_path / "labkit" / "progress.json"
    assert os.fspath(progress.progress_path()).startswith(str(tmp_path))

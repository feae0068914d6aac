import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import wait_gone

from labkit.grading import BEGIN, END, assign


def labkit(*args, cwd=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB")}
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("labkit ")
    for word in words:
        assert word in lines[0]


def test_doctor_without_server(tmp_path):
    result = labkit("doctor", "--no-server", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "python" in result.stdout
    assert "All good" in result.stdout
    assert "mlserver" not in [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok")]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["serve", "/nonexistent"], ["/nonexistent"]),
        (["assign", "--source", "/nonexistent"], ["/nonexistent"]),
        (["serve", "{tmp}/file.txt"], ["file.txt"]),
    ],
    ids=["serve-missing-folder", "assign-missing-source", "serve-a-file"],
)
def test_bad_usage_is_one_line_without_traceback(tmp_path, args, words):
    (tmp_path / "file.txt").write_text("not a model repository")
    result = labkit(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert_one_line_error(result, *words)


def test_unknown_command_is_a_usage_error():
    result = labkit("frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid choice" in result.stderr


@pytest.fixture
def course(tmp_path):
    source = tmp_path / "labs" / "solutions"
    source.mkdir(parents=True)
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Lab 01"),
        new_code_cell(f"{BEGIN}\nanswer = 42\n{END}\n"),
        new_code_cell("def f(x):\n    " + BEGIN + "\n    return x\n    " + END),
    ]
    nbformat.write(nb, source / "01_intro.ipynb")
    return tmp_path


def test_assign_check_exit_codes(course):
    # defaults are labs/solutions -> labs, relative to the working directory
    result = labkit("assign", "--check", cwd=course)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "out of sync" in result.stdout and "01_intro.ipynb" in result.stdout
    assert not (course / "labs" / "01_intro.ipynb").exists(), "--check wrote a notebook"

    assign(course / "labs" / "solutions", course / "labs")
    written = (course / "labs" / "01_intro.ipynb").read_text()
    result = labkit("assign", "--check", cwd=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 student notebooks in sync, 0 out of sync" in result.stdout
    assert (course / "labs" / "01_intro.ipynb").read_text() == written

    # explicit folders; a student notebook without a solution fails the check
    copy = course / "copy"
    shutil.copytree(course / "labs", copy)
    nbformat.write(new_notebook(), copy / "02_orphan.ipynb")
    result = labkit("assign", "--check", "--source", str(copy / "solutions"), "--dest", str(copy))
    assert result.returncode == 1
    assert "no solution for" in result.stdout and "02_orphan.ipynb" in result.stdout


def test_assign_with_malformed_markers_is_one_line(course):
    nb = nbformat.read(course / "labs" / "solutions" / "01_intro.ipynb", as_version=4)
    nb.cells.append(new_code_cell(END))
    nbformat.write(nb, course / "labs" / "solutions" / "01_intro.ipynb")
    result = labkit("assign", cwd=course)
    assert_one_line_error(result, "01_intro.ipynb", END)
    assert not (course / "labs" / "01_intro.ipynb").exists()


def test_serve_until_ctrl_c_leaves_no_process(sklearn_repo):
    import signal

    import httpx
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "serve", str(sklearn_repo), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving cancer: REST http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split("REST ")[1].split()[0]
        assert httpx.get(url + "/v2/models/cancer/ready").status_code == 200
        started = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(started) >= 3  # supervisor, MLServer, one worker
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(started, 5.0) == []


def test_doctor_fails_an_unsupported_python_with_a_fix(monkeypatch):
    from labkit import cli

    monkeypatch.setattr(cli.platform, "python_version", lambda: "3.13.0")
    report = cli.doctor(start_server=False)
    python = next(f for f in report.findings if f.name == "python")
    assert python.status == "fail" and "3.13.0" in python.detail and "3.11" in python.fix
    assert not report.ok
    assert "FAIL" in str(report) and "fix:" in str(report)

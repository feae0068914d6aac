#!/usr/bin/env python3
"""The course's two commands, for students, instructors and CI alike:

    python3 tasks.py lab     set up (or update) .venv, then open JupyterLab on labs/
    python3 tasks.py test    set up (or update) .venv, then run the whole test suite
    python3 tasks.py test --all-pythons   ... and then, on every other supported Python found on this
                             machine, the solution notebooks and the cross-Python tests (each in .venv-3.X)

Both install with `pip install -c constraints.txt -e ".[dev]"`, so every install
path gets the tested pins. Extra arguments go to JupyterLab or pytest.
"""

from __future__ import annotations  # this file must reach its own version check on an old Python

import glob
import hashlib
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".labkit-install"
# On the other supported Pythons, `test --all-pythons` runs what differs between Pythons: every solution notebook
# (TensorFlow, alibi-detect, ART, shap, fairlearn, MLServer in a real kernel), labkit from a wheel, the TensorFlow
# and alibi-detect parts, and one lab graded end to end. The rest runs once, which keeps CI well under 45 minutes.
CROSS_PYTHON_TESTS = ["labs/solutions", "tests/test_course.py", "tests/test_lab07_parts.py",
                      "tests/test_drift_runtime.py",
                      "tests/test_grading.py::test_lab01_solution_gets_full_marks_and_liars_get_nothing"]


def supported_pythons() -> list[tuple[int, int]]:
    """The Pythons of pyproject's ``requires-python``: the one place that tasks.py, setup.py and doctor read."""
    spec = re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return [(3, minor) for minor in range(int(spec[1]), int(spec[2]))]


def spoken(versions: list[tuple[int, int]]) -> str:
    names = [f"{major}.{minor}" for major, minor in versions]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def fail(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr)
    sys.exit(2)


def check_python() -> None:
    supported = supported_pythons()
    if sys.version_info[:2] in supported:
        return
    newest = f"{supported[-1][0]}.{supported[-1][1]}"
    why = (" (TensorFlow 2.18, MLServer 1.7 and alibi-detect 0.13 have no release for it yet)"
           if sys.version_info[:2] > supported[-1] else "")
    fail(f"Last Mile Lab needs Python {spoken(supported)}, and this is {sys.version.split()[0]}{why}. "
         f"Install Python {newest} (macOS: `brew install python@{newest}`; Linux: your package manager, pyenv or "
         f"uv) and run this command with it: `python{newest} tasks.py lab`.")


def install_fingerprint(python_version: str = sys.version) -> str:
    digest = hashlib.sha256(python_version.encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment(python: str | None = None, folder: Path = VENV) -> Path:
    """Create ``folder`` (a venv of ``python``, by default this one) with the pinned stack, unless it is up to
    date; its interpreter."""
    if python is None:
        check_python()
    bin_dir = folder / ("Scripts" if os.name == "nt" else "bin")
    env_python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    stamp = folder / ".labkit-install"
    version = sys.version if python is None else subprocess.check_output(
        [python, "-c", "import sys; print(sys.version)"], text=True).strip()
    fingerprint = install_fingerprint(version)
    if stamp.exists() and stamp.read_text() == fingerprint and env_python.exists():
        install_jupyter_config(folder)  # cheap, and it keeps an environment made before a config file was added current
        return env_python
    if not env_python.exists():
        print(f"Creating the environment in {folder} ...", flush=True)
        if python is None:
            venv.create(folder, with_pip=True)
        elif subprocess.call([python, "-m", "venv", str(folder)]) != 0:
            fail(f"{python} could not create a virtual environment in {folder}")
    print(f"Installing the course's packages into {folder.name} (the first time takes a few minutes) ...", flush=True)
    steps = [
        [str(env_python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(env_python), "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", ".[dev]"],
        # An editable install skips the wheel's data files (below), so link the prebuilt sidebar.
        [str(bin_dir / "jupyter-builder"), "develop", "--overwrite", "."],
    ]
    # Playwright (dev extra, for the browser test) drives Debian's Chromium; never its own download.
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for step in steps:
        if subprocess.call(step, cwd=ROOT, env=env) != 0:
            fail("installing the packages failed (see pip's message above). Check your network, "
                 "then run the command again; it resumes where it stopped.")
    install_jupyter_config(folder)
    stamp.write_text(fingerprint)
    return env_python


def find_python(version: tuple[int, int]) -> str | None:
    """An interpreter of ``version`` on this machine: ``pythonX.Y`` on PATH, else one that pyenv installed."""
    name = f"python{version[0]}.{version[1]}"
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    installed = glob.glob(f"{pyenv_root}/versions/{version[0]}.{version[1]}.*/bin/{name}")
    candidates = [shutil.which(name), *sorted(installed, reverse=True)]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True)  # a pyenv shim of a version not selected fails here
        if probe.returncode == 0 and probe.stdout.strip() == str(version):
            return candidate
    return None


# The course's Jupyter configuration, where the wheel's data files put it (see pyproject.toml): the server
# extension enabled, and JupyterLab's settings (no "get notified about news?" pop-up). An editable install skips
# data files, so they are copied here.
JUPYTER_CONFIG = {
    "labkit.json": Path("etc", "jupyter", "jupyter_server_config.d", "labkit.json"),
    "overrides.d/labkit.json": Path("share", "jupyter", "lab", "settings", "overrides.d", "labkit.json"),
}


def install_jupyter_config(folder: Path = VENV) -> None:
    for source, target in JUPYTER_CONFIG.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "jupyter-config" / source, folder / target)


def run(command: list[str], cwd: Path = ROOT, **extra_env: str) -> int:
    """Run ``command`` until it ends and return its exit status (128 + N if signal N ended it).

    SIGTERM, and SIGINT unless the terminal sent it to both of us already, go on to the command, and the command
    is waited for: stopping this wrapper never leaves JupyterLab or pytest running without it.
    """
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(extra_env)
    child = subprocess.Popen(command, cwd=cwd, env=env)

    def forward(signum, frame):
        if signum == signal.SIGINT and from_terminal():
            return  # Ctrl-C reached the child too: JupyterLab asks whether to stop, and we wait for its answer
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status


def from_terminal() -> bool:
    """Whether this process runs in its terminal's foreground, where Ctrl-C signals every process of the group."""
    try:
        return os.getpgrp() == os.tcgetpgrp(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # no terminal (or Windows)
        return False


def lab(args: list[str]) -> int:
    command = [str(PYTHON), "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers often run as root; Jupyter refuses it otherwise
    return run(command, cwd=ROOT / "labs")


def ensure_debian_package(package: str, command: str, needed_by: str) -> None:
    """Install a Debian package that a test needs when we are root and its command is missing."""
    if shutil.which(command) or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return  # present, or not ours to install: the tests that need it skip and say why
    print(f"Installing Debian's {package} for {needed_by} ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL}
    if subprocess.call(["apt-get", "install", "-y", "-q", package], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", package], **quiet)


def test(args: list[str]) -> int:
    """The whole suite on this Python; with ``--all-pythons``, then the cross-Python part on each other one."""
    all_pythons = "--all-pythons" in args
    args = [a for a in args if a != "--all-pythons"]
    ensure_debian_package("chromium", "chromium", "the browser test")
    ensure_debian_package("bubblewrap", "bwrap", "the grader's sandbox")
    lint = run([str(PYTHON), "-m", "ruff", "check", "labkit", "tests", "tasks.py", "setup.py", "datasets", "benchmarks",
                "binder"])
    # The notebooks that the tests run must not write into the user's own progress (the sidebar's).
    results = {"ruff": lint, f"{sys.version_info[0]}.{sys.version_info[1]} (all tests)": run(
        [str(PYTHON), "-m", "pytest", *args], LABKIT_PROGRESS="off")}
    if all_pythons:
        for version in supported_pythons():
            label = f"{version[0]}.{version[1]}"
            if version == sys.version_info[:2]:
                continue
            python = find_python(version)
            if python is None:
                print(f"tasks.py: Python {label} is not on this machine; its tests are skipped", flush=True)
                continue
            print(f"tasks.py: Python {label} ({python}): solution notebooks and cross-Python tests", flush=True)
            other = ensure_environment(python, ROOT / f".venv-{label}")
            results[f"{label} (cross-Python tests)"] = run(
                [str(other), "-m", "pytest", *CROSS_PYTHON_TESTS, *args], LABKIT_PROGRESS="off",
                PATH=f"{other.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for part, code in results.items():
        print(f"tasks.py: {part}: {'passed' if code == 0 else f'FAILED (exit {code})'}", flush=True)
    return next((code for code in results.values() if code), 0)


COMMANDS = {"lab": lab, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}} [arguments for JupyterLab or pytest]")
    ensure_environment()
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))

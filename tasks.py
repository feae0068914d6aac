#!/usr/bin/env python3
"""The course's two commands, for students, instructors and CI alike:

    python3 tasks.py lab     set up (or update) .venv, then open JupyterLab on labs/
    python3 tasks.py test    set up (or update) .venv, then run the whole test suite

Both install with `pip install -c constraints.txt -e ".[dev]"`, so every install
path gets the tested pins. Extra arguments go to JupyterLab or pytest.
"""

import hashlib
import contextlib
import os
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
SUPPORTED = ((3, 10), (3, 12))


def fail(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr)
    sys.exit(2)


def install_fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    """Create .venv and install the pinned stack, unless it is already up to date."""
    low, high = SUPPORTED
    if not low <= sys.version_info[:2] <= high:
        fail(f"Last Mile Lab needs Python 3.10, 3.11 or 3.12, and this is {sys.version.split()[0]}. "
             "Install one of them and run this command with it, for example `python3.11 tasks.py lab`.")
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint and PYTHON.exists():
        install_jupyter_config()  # cheap, and it keeps an environment made before a config file was added current
        return
    if not PYTHON.exists():
        print(f"Creating the environment in {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing the course's packages (the first time takes a few minutes) ...", flush=True)
    steps = [
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", ".[dev]"],
        # An editable install skips the wheel's data files (below), so link the prebuilt sidebar.
        [str(BIN / "jupyter-builder"), "develop", "--overwrite", "."],
    ]
    # Playwright (dev extra, for the browser test) drives Debian's Chromium; never its own download.
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for step in steps:
        if subprocess.call(step, cwd=ROOT, env=env) != 0:
            fail("installing the packages failed (see pip's message above). Check your network, "
                 "then run the command again; it resumes where it stopped.")
    install_jupyter_config()
    STAMP.write_text(fingerprint)


# The course's Jupyter configuration, where the wheel's data files put it (see pyproject.toml): the server
# extension enabled, and JupyterLab's settings (no "get notified about news?" pop-up). An editable install skips
# data files, so they are copied here.
JUPYTER_CONFIG = {
    "labkit.json": Path("etc", "jupyter", "jupyter_server_config.d", "labkit.json"),
    "overrides.d/labkit.json": Path("share", "jupyter", "lab", "settings", "overrides.d", "labkit.json"),
}


def install_jupyter_config() -> None:
    for source, target in JUPYTER_CONFIG.items():
        (VENV / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "jupyter-config" / source, VENV / target)


def run(command: list[str], cwd: Path = ROOT, **extra_env: str) -> int:
    """Run ``command`` until it ends and return its exit status (128 + N if signal N ended it).

    SIGTERM, and SIGINT unless the terminal sent it to both of us already, go on to the command, and the command
    is waited for: stopping this wrapper never leaves JupyterLab or pytest running without it.
    """
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               **extra_env)
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


def ensure_chromium() -> None:
    """The browser test needs Debian's Chromium: install it when we are root and it is missing."""
    if shutil.which("chromium") or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return  # present, or not ours to install: tests/test_browser.py skips and says why
    print("Installing Debian's chromium for the browser test ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL}
    if subprocess.call(["apt-get", "install", "-y", "-q", "chromium"], **quiet) != 0:
        subprocess.call(["apt-get", "update", "-q"], **quiet)
        subprocess.call(["apt-get", "install", "-y", "-q", "chromium"], **quiet)


def test(args: list[str]) -> int:
    ensure_chromium()
    lint = run([str(PYTHON), "-m", "ruff", "check", "labkit", "tests", "tasks.py", "datasets", "benchmarks"])
    # The notebooks that the tests run must not write into the user's own progress (the sidebar's).
    tests = run([str(PYTHON), "-m", "pytest", *args], LABKIT_PROGRESS="off")
    return lint or tests


COMMANDS = {"lab": lab, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}} [arguments for JupyterLab or pytest]")
    ensure_environment()
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))

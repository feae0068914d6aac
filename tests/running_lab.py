"""A real JupyterLab server on 127.0.0.1 for the extension's API and browser tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from labkit.serving import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Lab:
    url: str  # with the base url, ending in "/"
    token: str
    progress_file: Path
    process: subprocess.Popen
    log: Path

    def api(self, path: str) -> str:
        return f"{self.url}labkit/api/{path}"

    @property
    def auth(self) -> dict:
        return {"Authorization": f"token {self.token}"}


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, base_url: str = "/", extra_env: dict | None = None, timeout: float = 90,
               extra_args: tuple[str, ...] = ()):
    """Run ``jupyter lab`` on ``root`` with a token, a private data dir and progress file; yield a ``Lab``."""
    home.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    progress_file = home / "progress.json"
    env = dict(
        os.environ,
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        LABKIT_PROGRESS_FILE=str(progress_file),
        TF_USE_LEGACY_KERAS="1",
    )
    env.pop("LABKIT_PROGRESS", None)
    env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
    env.update(extra_env or {})
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", f"--ServerApp.base_url={base_url}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
        "jupyterlab.NeverCheckForUpdate", "--ServerApp.allow_root=True", *extra_args,
    ]
    log = home / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}{base_url}", token, progress_file, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError("JupyterLab exited:\n" + log.read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(lab.url + "api/status", headers=lab.auth, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not answer in time:\n" + log.read_text()[-3000:])
            time.sleep(0.25)
        yield lab
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

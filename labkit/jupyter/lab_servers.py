"""The lab servers running on this machine, seen from outside the kernels that own them.

Every ``labkit.serving.Server`` runs under a supervisor process ``python -m labkit.serving
WORKDIR``; WORKDIR holds the merged ``settings.json`` (ports), links to the served models
and the log. So the Jupyter server finds running lab servers by their supervisors, and
stops one by sending its supervisor SIGTERM: it then ends MLServer's whole process group
and removes WORKDIR, exactly as when its kernel dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import psutil

from labkit.serving import HOST, LOG_NAME, ServerError, model_names, proxied_url


def _workdir(cmdline: list[str]) -> Path | None:
    for i in range(len(cmdline) - 2):
        if cmdline[i] == "-m" and cmdline[i + 1] == "labkit.serving":
            return Path(cmdline[i + 2])
    return None


def _supervisors() -> dict[int, tuple[psutil.Process, Path]]:
    """Supervisor processes of this user, by pid, with their work folders."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
            continue
        if hasattr(os, "getuid") and info["uids"] and info["uids"].real != os.getuid():
            continue  # someone else's server: neither shown nor stoppable
        workdir = _workdir(info["cmdline"])
        if workdir is not None:
            found[info["pid"]] = (proc, workdir)
    return found


def describe(pid: int, proc: psutil.Process, workdir: Path) -> dict | None:
    """What the sidebar shows of one server; None if it is gone or not started yet."""
    try:
        settings = json.loads((workdir / "repository" / "settings.json").read_text())
        owner = proc.ppid()
        started = proc.create_time()
    except (OSError, ValueError, psutil.Error):
        return None
    http_port = settings.get("http_port")
    repository = _repository(workdir / "repository")
    try:
        models = model_names(repository) if repository else []
    except ServerError:
        models = []
    return {
        "id": pid,
        "owner_pid": owner,
        "started": started,
        "http_port": http_port,
        "grpc_port": settings.get("grpc_port"),
        "metrics_port": settings.get("metrics_port"),
        "url": f"http://{HOST}:{http_port}",
        "browser_url": proxied_url(http_port),
        "models": models,
        "repository": str(repository) if repository else None,
    }


def _repository(serving: Path) -> Path | None:
    """The student's model repository: where the links of the serving folder point."""
    for entry in sorted(serving.iterdir()) if serving.is_dir() else []:
        if entry.is_symlink():
            return Path(os.readlink(entry)).parent
    return None


def list_servers() -> list[dict]:
    """Every lab server of this user that is running, oldest first."""
    servers = [describe(pid, proc, workdir) for pid, (proc, workdir) in _supervisors().items()]
    return sorted((s for s in servers if s), key=lambda s: s["started"])


def log_tail(pid: int, lines: int = 40) -> str | None:
    """The last lines of a running server's log; None if there is no such server."""
    entry = _supervisors().get(pid)
    if entry is None:
        return None
    try:
        text = (entry[1] / LOG_NAME).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_server(pid: int, timeout: float = 10) -> bool:
    """Stop the lab server whose supervisor is ``pid``; False if there is no such server.

    Only a supervisor found by ``_supervisors`` (a labkit server of this user) is signalled,
    so this endpoint cannot be used to end arbitrary processes.
    """
    entry = _supervisors().get(pid)
    if entry is None:
        return False
    proc = entry[0]
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
        # The supervisor's parent (the kernel) reaps it; wait until it is no longer running.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
    return True

"""The Jupyter server extension: a small REST API for the "Last Mile Lab" sidebar.

All routes sit under ``<base_url>labkit/api/`` and are authenticated like the rest of
Jupyter Server (token or cookie; unauthenticated requests get 403):

    GET    labs                  the labs in order, each exercise with its latest status
    GET    progress              the raw progress record (labkit.jupyter.progress)
    GET    servers               running lab servers: ports, models, health, owning notebook
    DELETE servers/PID           stop one lab server
    GET    servers/PID/logs?lines=N   the last lines of its log
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from labkit.jupyter import catalog, lab_servers, progress

# Exercise catalogue per set of labs and check-module mtimes: building it costs a subprocess.
_CATALOGUE_CACHE: dict[tuple, dict] = {}


async def exercise_catalogue(labs: list[str]) -> dict:
    checks_dir = Path(__file__).resolve().parent.parent / "checks"
    key = (tuple(labs), tuple(sorted((p.name, p.stat().st_mtime_ns) for p in checks_dir.glob("*.py"))))
    if key not in _CATALOGUE_CACHE:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "labkit.jupyter.catalog", *labs,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, LABKIT_QUIET="1", LABKIT_PROGRESS="off"),
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        except TimeoutError:
            proc.kill()
            return {lab: {"error": "listing the checks took over 120 s"} for lab in labs}
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            return {lab: {"error": f"listing the checks failed: {message[0]}"} for lab in labs}
        _CATALOGUE_CACHE.clear()
        _CATALOGUE_CACHE[key] = json.loads(out)
    return _CATALOGUE_CACHE[key]


class LabkitHandler(APIHandler):
    @property
    def root(self) -> Path:
        return Path(self.settings["server_root_dir"]).expanduser().resolve()


class LabsHandler(LabkitHandler):
    @tornado.web.authenticated
    async def get(self):
        folder = catalog.labs_folder(self.root)
        labs = catalog.discover_labs(folder) if folder else []
        known = await exercise_catalogue([lab["lab"] for lab in labs])
        recorded = progress.load()["exercises"]
        for lab in labs:
            lab["path"] = (folder / lab["file"]).relative_to(self.root).as_posix()
            entries = known.get(lab["lab"], [])
            if isinstance(entries, dict):  # the lab's check module failed to load
                lab["error"], entries = entries.get("error"), []
            lab["exercises"] = [
                {**e, "status": recorded.get(e["name"], {}).get("status", "not_attempted"),
                 "points_scored": recorded.get(e["name"], {}).get("points", 0.0)}
                for e in entries
            ]
        self.finish(json.dumps({"labs_folder": str(folder) if folder else None, "labs": labs}))


class ProgressHandler(LabkitHandler):
    @tornado.web.authenticated
    def get(self):
        self.finish(json.dumps(progress.load()))


class ServersHandler(LabkitHandler):
    @tornado.web.authenticated
    async def get(self):
        servers = await asyncio.to_thread(lab_servers.list_servers)
        notebooks = await self._notebooks_by_kernel_pid()
        healths = await asyncio.gather(*(self._ready(s["url"]) for s in servers))
        for server, ready in zip(servers, healths, strict=True):
            server["ready"] = ready
            server["notebook"] = notebooks.get(server["owner_pid"])
        self.finish(json.dumps({"servers": servers}))

    async def _ready(self, url: str) -> bool:
        try:
            reply = await AsyncHTTPClient().fetch(url + "/v2/health/ready", request_timeout=2, raise_error=False)
        except (TimeoutError, OSError, HTTPClientError):
            return False
        return reply.code == 200

    async def _notebooks_by_kernel_pid(self) -> dict[int, str]:
        """Which notebook owns which kernel process, so the sidebar can say who started a server."""
        by_kernel = {}
        try:
            for session in await self.session_manager.list_sessions():
                by_kernel[session["kernel"]["id"]] = session.get("path")
            pids = {}
            for kernel_id in self.kernel_manager.list_kernel_ids():
                provisioner = getattr(self.kernel_manager.get_kernel(kernel_id), "provisioner", None)
                pid = getattr(provisioner, "pid", None)
                if pid and kernel_id in by_kernel:
                    pids[pid] = by_kernel[kernel_id]
            return pids
        except Exception:  # remote or unusual kernel managers: the list works without names
            return {}


class ServerHandler(LabkitHandler):
    @tornado.web.authenticated
    async def delete(self, pid: str):
        stopped = await asyncio.to_thread(lab_servers.stop_server, int(pid))
        if not stopped:
            raise tornado.web.HTTPError(404, f"no running lab server with id {pid}")
        self.set_status(204)
        self.finish()


class ServerLogsHandler(LabkitHandler):
    @tornado.web.authenticated
    def get(self, pid: str):
        try:
            lines = max(1, min(int(self.get_argument("lines", "40")), 2000))
        except ValueError:
            raise tornado.web.HTTPError(400, "lines must be a whole number") from None
        text = lab_servers.log_tail(int(pid), lines)
        if text is None:
            raise tornado.web.HTTPError(404, f"no running lab server with id {pid}")
        self.finish(json.dumps({"id": int(pid), "log": text}))


def load_jupyter_server_extension(serverapp) -> None:
    base = url_path_join(serverapp.web_app.settings["base_url"], "labkit", "api")
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "labs"), LabsHandler),
        (url_path_join(base, "progress"), ProgressHandler),
        (url_path_join(base, "servers"), ServersHandler),
        (url_path_join(base, r"servers/(\d+)"), ServerHandler),
        (url_path_join(base, r"servers/(\d+)/logs"), ServerLogsHandler),
    ])
    serverapp.log.info("labkit: Last Mile Lab API at %s", base)

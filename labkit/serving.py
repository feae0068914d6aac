"""Start, watch and stop MLServer processes from a notebook.

Each server runs under a small supervisor process (``python -m labkit.serving``)
that the notebook's kernel owns. MLServer's workers ignore SIGTERM and are
orphaned when their main process is killed, so the supervisor ends MLServer's
whole process group as soon as its owner goes away: on ``stop()``, when the
kernel exits, and when the kernel is killed outright (its end of the
supervisor's stdin pipe closes, or the supervisor is re-parented).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import html
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
LOG_NAME = "server.log"
# Every server this process started, so running_servers() and the exit hook reach it
# even after the notebook dropped its variable.
_RUNNING: set[Server] = set()
# The grader's worker sets this so that MLServer for a check, which imports the student's runtime, runs in a
# sandbox: ``launcher(command, writable, readable, cwd)`` returns the command that runs ``command`` in one.
launcher = None
# Settings that the lab tooling owns; a student's settings.json may set anything else.
_MANAGED = ("host", "http_port", "grpc_port", "metrics_port", "metrics_dir", "model_repository_root")


class ServerError(RuntimeError):
    """MLServer could not be started, or stopped serving."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def model_names(repository: str | os.PathLike) -> list[str]:
    """Names of the models in a repository, as MLServer will name them."""
    names = []
    # glob.glob, as MLServer does: unlike Path.glob it follows linked folders (checks link a student's folder)
    for path in map(Path, sorted(glob.glob(os.path.join(repository, "**", "model-settings.json"), recursive=True))):
        try:
            declared = json.loads(path.read_text()).get("name")
        except (OSError, ValueError) as e:
            raise ServerError(f"{path} is not valid JSON: {e}") from None
        names.append(declared or path.parent.name)
    return names


class Server:
    """An MLServer serving a model repository on free ports of 127.0.0.1.

    >>> with Server("work/models") as server:          # doctest: +SKIP
    ...     print(server.url, server.grpc_target)

    or ``server = Server(...).start()`` and later ``server.stop()``.
    ``settings`` overrides entries of MLServer's ``settings.json`` (for example
    ``{"parallel_workers": 2}``); the repository folder itself is never written to.
    """

    def __init__(
        self,
        repository: str | os.PathLike,
        *,
        settings: dict | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        timeout: float = 60,
        env: dict | None = None,
    ):
        self.repository = Path(repository).resolve()
        self.settings = dict(settings or {})
        bad = sorted(set(self.settings) & set(_MANAGED))
        if bad:
            raise ValueError(f"labkit sets {', '.join(bad)} itself; pass ports as arguments instead")
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.timeout = timeout
        self.env = dict(env or {})
        self.workdir: Path | None = None
        self._boxed = False  # in a sandbox: its pids are not ours to signal, and it ends with its supervisor
        self._supervisor: subprocess.Popen | None = None
        self._final_log = ""

    # -- addresses ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def browser_url(self, path: str = "", port: int | None = None) -> str:
        """The address of ``path`` on this server for the student's browser.

        The kernel always calls 127.0.0.1 (``url``); under JupyterHub or Binder the browser
        is elsewhere and reaches the server through jupyter-server-proxy instead.
        """
        return proxied_url(port or self.http_port, path)

    @property
    def models(self) -> list[str]:
        return model_names(self.repository)

    @property
    def pid(self) -> int | None:
        """Process id of MLServer's main process (also its process group id)."""
        if self.workdir and (self.workdir / "mlserver.pid").exists():
            return int((self.workdir / "mlserver.pid").read_text())
        return None

    @property
    def running(self) -> bool:
        return self._supervisor is not None and self._supervisor.poll() is None

    # -- life cycle --------------------------------------------------------
    def start(self) -> Server:
        if self.running:
            return self
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} is not a folder")
        names = self.models  # fails early on a broken model-settings.json
        self._choose_ports()
        self.workdir = Path(tempfile.mkdtemp(prefix="labkit-mlserver-"))
        self._write_serving_folder()
        command = [sys.executable, "-m", "labkit.serving", str(self.workdir)]
        self._boxed = launcher is not None
        if self._boxed:
            command = launcher(command, [self.workdir], self._sources(), self.workdir)
        self._supervisor = spawn_supervised(command, self.workdir, self._server_env())
        _RUNNING.add(self)
        try:
            self._wait_ready(names)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop the server and all its workers (typically within 2 s); its log stays readable."""
        sup = self._supervisor
        if sup is None:
            return
        if sup.poll() is None:
            if not ask_to_stop(sup, timeout):
                # The supervisor itself is stuck: end everything by force.
                pid = self.pid
                if pid and not self._boxed:
                    _kill_group(pid, signal.SIGKILL)
                sup.kill()
                sup.wait()
        else:
            # Supervisor gone already; make sure nothing it started survives (a box ended with it).
            pid = self.pid
            if pid and not self._boxed:
                _kill_group(pid, signal.SIGKILL)
        _RUNNING.discard(self)
        self._supervisor = None
        self._final_log = self.logs(1000)
        shutil.rmtree(self.workdir, ignore_errors=True)  # settings, metrics and log of this run

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = (self.workdir / LOG_NAME).read_text(errors="replace")
        except (FileNotFoundError, TypeError):
            text = self._final_log  # the run is over and its folder removed
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Server {state} {self.url} grpc={self.grpc_target} repository={self.repository}>"

    def _repr_html_(self) -> str:
        state = "running" if self.running else "stopped"
        models = ", ".join(self.models) or "no models"
        links = ""
        if self.running:
            # dataplane.json, not the Swagger page /v2/docs: that one loads its API
            # description from an absolute path, which breaks behind the Jupyter proxy.
            pages = [("ready", self.browser_url("/v2/health/ready")),
                     ("API (OpenAPI)", self.browser_url("/v2/docs/dataplane.json")),
                     ("metrics", self.browser_url("/metrics", self.metrics_port))]
            links = "<br>open: " + " &middot; ".join(
                f'<a href="{html.escape(href)}" target="_blank">{label}</a>' for label, href in pages)
        return (
            f"<b>MLServer</b> ({state}): REST <code>{self.url}</code>, gRPC "
            f"<code>{self.grpc_target}</code>, metrics <code>{self.metrics_url}</code>; "
            f"models: {html.escape(models)}{links}"
        )

    # -- internals ---------------------------------------------------------
    def _choose_ports(self) -> None:
        chosen: set[int] = set()
        for attr in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, attr)
            if port is None:
                port = free_port()
                while port in chosen:
                    port = free_port()
            elif not port_is_free(port):
                raise ServerError(
                    f"port {port} ({attr}) on {HOST} is already in use; "
                    "stop whatever uses it or leave the port out to get a free one"
                )
            chosen.add(port)
            setattr(self, attr, port)

    def _sources(self) -> list[Path]:
        """The repository and the folders its entries link to (a check links the student's folder)."""
        sources = [self.repository]
        for entry in self.repository.iterdir():
            if entry.is_symlink():
                sources.append(entry.resolve())
        return sources

    def _write_serving_folder(self) -> None:
        """Link the repository's entries into the work folder next to our settings.

        ``mlserver start FOLDER`` reads FOLDER/settings.json and serves FOLDER,
        and settings.json beats MLSERVER_* variables, so the student's folder
        is mirrored by symbolic links instead of being written to.
        """
        settings = {}
        student_settings = self.repository / "settings.json"
        if student_settings.exists():
            try:
                settings = json.loads(student_settings.read_text())
            except ValueError as e:
                raise ServerError(f"{student_settings} is not valid JSON: {e}") from None
        settings.update(self.settings)
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir()
        settings.update(
            host=HOST,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            metrics_dir=str(metrics_dir),
        )
        serve = self.workdir / "repository"
        serve.mkdir()
        for entry in self.repository.iterdir():
            if entry.name != "settings.json":
                (serve / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        (serve / "settings.json").write_text(json.dumps(settings, indent=2))

    def _server_env(self) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the student's folders
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("MPLBACKEND", None)  # the kernel's inline backend does not exist out there
        return env

    def _wait_ready(self, names: list[str]) -> None:
        import httpx

        deadline = time.monotonic() + self.timeout
        pending = ["/v2/health/ready"] + [f"/v2/models/{n}/ready" for n in names]
        with httpx.Client(base_url=self.url, timeout=2, trust_env=False) as http:
            while pending:
                if self._supervisor.poll() is not None:
                    raise ServerError(
                        "MLServer stopped before it was ready (a model that fails to load "
                        "shuts the server down). Last lines of its log:\n" + self.logs()
                    )
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"MLServer was not ready after {self.timeout:g} s "
                        f"(still waiting for {pending[0]}). Last lines of its log:\n" + self.logs()
                    )
                try:
                    if http.get(pending[0]).status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)


def proxied_url(port: int, path: str = "") -> str:
    """``http://127.0.0.1:PORT/path``, or ``<prefix>proxy/PORT/path`` under JupyterHub or Binder.

    Both set ``JUPYTERHUB_SERVICE_PREFIX`` (for example ``/user/ada/``), and
    jupyter-server-proxy forwards ``<prefix>proxy/PORT/...`` to 127.0.0.1:PORT with the
    prefix stripped.
    """
    path = "/" + path.lstrip("/") if path else ""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return f"/{prefix.strip('/')}/proxy/{port}{path}".replace("//proxy", "/proxy")
    return f"http://{HOST}:{port}{path}"


def running_servers() -> list[Server]:
    """The servers this kernel started and that still run."""
    return [s for s in list(_RUNNING) if s.running]


def stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


atexit.register(stop_all)


def spawn_supervised(command: list[str], workdir: Path, env: dict) -> subprocess.Popen:
    """Start ``command`` (a supervisor that calls ``watch_owner``) in ``workdir``, its output in the log there.

    Its stdin is a pipe from this process: ``ask_to_stop`` writes to it, and it closes when this process dies.
    """
    with open(workdir / LOG_NAME, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            # Out of the kernel's process group: an interrupt (SIGINT to the
            # group) must not stop the server, and a kill of the group must
            # leave the supervisor alive to clean up.
            start_new_session=True,
        )


def ask_to_stop(supervisor: subprocess.Popen, timeout: float) -> bool:
    """An orderly stop of a ``spawn_supervised`` process; False if it did not end within ``timeout`` s."""
    try:
        supervisor.stdin.write(b"stop\n")  # the supervisor leaves the log to us
        supervisor.stdin.close()
    except OSError:
        pass
    try:
        supervisor.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def watch_owner(owner: int, alive=lambda: True, poll: float = 0.5) -> str:
    """Inside a supervised process: block until ``"stop"`` (asked on stdin), ``"orphaned"`` (the owner died:
    its end of the stdin pipe closed, or this process was re-parented) or ``"ended"`` (``alive()`` turned false).
    """
    while alive():
        ready, _, _ = select.select([sys.stdin], [], [], poll)
        if ready:
            received = sys.stdin.buffer.read1(1024)
            if received.startswith(b"stop"):
                return "stop"
            if not received:
                return "orphaned"
        if os.getppid() != owner:
            return "orphaned"
    return "ended"


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _supervise(workdir: Path) -> int:
    """Run MLServer and end its whole process group when the owner goes away."""
    owner = os.getppid()
    mlserver = Path(sys.executable).with_name("mlserver")
    command = [str(mlserver)] if mlserver.exists() else [sys.executable, "-m", "mlserver.cli.main"]
    proc = subprocess.Popen(
        command + ["start", str(workdir / "repository")],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own group, so the workers can be killed together
    )
    (workdir / "mlserver.pid").write_text(str(proc.pid))

    def shutdown(*_):
        raise SystemExit

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    orphaned = False
    try:
        orphaned = watch_owner(owner, lambda: proc.poll() is None) == "orphaned"
    except SystemExit:
        orphaned = True
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful: MLServer reaps its workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
        _kill_group(proc.pid, signal.SIGKILL)  # workers ignore SIGTERM
        proc.wait()
    print(f"labkit: MLServer exited with code {proc.returncode}", flush=True)
    if orphaned:  # nobody is left to read the log or wipe the metrics
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_supervise(Path(sys.argv[1])))

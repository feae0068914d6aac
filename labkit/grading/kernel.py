"""One kernel for one submission: runs its cells, answers the bridge's requests, and leaves no process behind."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from labkit import bridge, course
from labkit.grading import sandbox
from labkit.grading.lab import Options

MARKER = "LABKIT_GRADING_RUN"  # in the environment of every process a graded kernel starts


class KernelDied(BaseException):
    """The kernel died while running student code for a check (BaseException: no check may swallow it)."""

    def __str__(self):
        return "the kernel died while running your code (os._exit, a crash or the memory limit)"


class _Kernel(bridge.Bridge):
    """One kernel for one submission: runs cells, answers bridge requests, leaves no process behind."""

    def __init__(self, workdir: Path, options: Options, marker: str | None = None,
                 policy: sandbox.Policy | None = None):
        self.workdir = workdir
        self.options = options
        self.policy = policy  # None: the kernel runs unboxed (check_all(), --no-sandbox)
        # The bridge's messages, the kernel's sockets and connection file: the one folder besides the work
        # folder that the kernel's box may write to.
        self.folder = Path(tempfile.mkdtemp(prefix="labkit-bridge-"))
        self.marker = marker or uuid.uuid4().hex
        self.requests = 0
        self.output_bytes = 0
        self.output_dropped = 0
        self.errors: list[str] = []
        self.deadline: float | None = None  # of the check in progress
        self.dead = False
        self.timed_out = False
        self.client = None
        self.log = None
        self.starts = 0

    # ---- life cycle
    def start(self) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        kernel = self

        class CappedKernelManager(AsyncKernelManager):  # async: a blocking client would block nbclient's timeouts
            @property
            def kernel_spec(self):
                spec = super().kernel_spec
                if spec is not None and kernel.policy is not None:
                    # A signal to the box's processes goes through bwrap; a message reaches the kernel itself.
                    spec.interrupt_mode = "message"
                return spec

            def format_kernel_cmd(self, extra_arguments=None):
                command = super().format_kernel_cmd(extra_arguments)
                if kernel.policy is not None:
                    return kernel.policy.wrap(command, [kernel.workdir, kernel.folder], cwd=kernel.workdir)
                return sandbox.limited(command, kernel.options.memory_mb * 2**20)

        class Client(NotebookClient):
            async def _async_handle_timeout(self, timeout, cell=None):
                kernel.timed_out = True  # nbclient interrupts the kernel and gives up on the cell's reply
                return await super()._async_handle_timeout(timeout, cell)

            def output(self, outs, msg, display_id, cell_index):
                kernel._count_output(msg)
                if kernel.output_bytes > kernel.options.max_output_mb * 2**20:
                    kernel.output_dropped += 1
                    return None
                return super().output(outs, msg, display_id, cell_index)

        env = dict(os.environ)
        env.update({MARKER: self.marker, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                    "PYTHONDONTWRITEBYTECODE": "1", "TF_USE_LEGACY_KERAS": "1",
                    "LABKIT_PROGRESS": "off"})  # a student's checks must not land in the instructor's sidebar
        with contextlib.suppress(course.CourseNotFound):  # the run's copy of labs/ is outside the course
            env[course.ENV] = str(course.root())
        env.pop("JPY_SESSION_NAME", None)
        if self.policy is not None:
            env = sandbox.kernel_env(env)
        self.nb = nbformat.v4.new_notebook()
        if self.log is None:  # the kernel's own stdout/stderr, not the grader's
            self.log = open(self.folder / "kernel.log", "ab")  # noqa: SIM115 (closed by cleanup)
        for attempt in (1, 2):  # a kernel that dies before its first reply gets one more chance
            self.starts += 1
            # Unix sockets in our own folder: no race for TCP ports with kernels that start at the same time.
            km = CappedKernelManager(kernel_name="python3", transport="ipc", ip=str(self.folder / f"k{self.starts}"),
                                     connection_file=str(self.folder / f"kernel-{self.starts}.json"))
            self.client = Client(self.nb, km=km, kernel_name="python3",
                                 allow_errors=True, interrupt_on_timeout=True, iopub_timeout=4,
                                 error_on_timeout={"ename": "Timeout", "evalue": "the cell ran out of time"},
                                 resources={"metadata": {"path": str(self.workdir)}})
            try:
                self.client.start_new_kernel(env=env, stdout=self.log, stderr=self.log)
                self.client.start_new_kernel_client()  # waits for the first reply: where a dying kernel shows
                break
            except Exception:
                self.stop()
                if attempt == 2:
                    raise
        self.dead = False

    def stop(self) -> None:
        """Shut the kernel down and end every process it started, servers included."""
        if self.client is None:
            return
        import psutil

        km = self.client.km
        pid = getattr(getattr(km, "provisioner", None), "process", None)
        family = []
        if pid is not None:
            try:
                family = [psutil.Process(pid.pid)] + psutil.Process(pid.pid).children(recursive=True)
            except psutil.Error:
                family = []
        try:
            if self.client.kc is not None:
                self.client.kc.stop_channels()
            _wait(km.shutdown_kernel(now=True))
        except Exception:
            pass
        self.client = None
        end_processes(self.marker, family)

    def cleanup(self) -> None:
        self.stop()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- cells
    def _count_output(self, msg: dict) -> None:
        content = msg.get("content", {})
        size = sum(len(str(v)) for v in (content.get("data") or {}).values()) + len(str(content.get("text", "")))
        self.output_bytes += size
        if msg.get("msg_type") == "error":
            self.errors.append(f"{content.get('ename', 'Error')}: {str(content.get('evalue', ''))[:300]}")

    def run(self, source: str, timeout: float) -> str:
        """Run one cell: ``ok``, ``error``, ``timeout`` (interrupted), ``hung`` (ignored the interrupt, so the
        kernel was killed) or ``died``."""
        status = self._execute(source, timeout)
        if status == "timeout" and self._execute("pass", 5) != "ok":
            self.dead = True
            self.stop()
            return "hung"
        return status

    def _execute(self, source: str, timeout: float) -> str:
        from nbclient.exceptions import DeadKernelError

        if self.client is None:
            self.dead = True
            return "died"
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells = [cell]  # nothing to keep: outputs are counted, not stored
        self.client.timeout = max(1, int(math.ceil(timeout)))
        self.timed_out = False
        errors = len(self.errors)
        try:
            self.client.execute_cell(cell, 0, store_history=False)
        except DeadKernelError:
            self.dead = True
            return "died"
        except Exception as e:  # a broken channel is a dead kernel for our purposes
            self.errors.append(f"{type(e).__name__}: {e}")
            self.dead = not self._alive()
            return "died" if self.dead else "error"
        if self.timed_out:
            return "timeout"
        return "error" if len(self.errors) > errors else "ok"

    def _alive(self) -> bool:
        try:
            return bool(_wait(self.client.km.is_alive()))
        except Exception:
            return False

    # ---- answers
    def answer(self, expression: str) -> Any:
        """The value of ``expression`` in the kernel: plain data, a proxy, or ``Missing``."""
        self.requests += 1
        n = self.requests
        status = self.run(f"__import__('labkit.bridge').bridge.serve({str(self.folder)!r}, {n}, "
                          f"answer=lambda: ({expression}))", self.options.timeout_cell)
        if status != "ok" and not (self.folder / f"out-{n}.json").exists():
            return Missing(f"evaluating `{expression}` in the notebook failed ({status})")
        try:
            reply = bridge._read(self.folder, f"out-{n}", self)
        except bridge.BridgeError as e:
            return Missing(f"`{expression}` could not be passed to the grader: {e}")
        if "error" in reply:
            error = reply["error"]
            if error.get("type") == "NameError":
                return Missing(f"`{expression}` is not defined when the notebook has run")
            return Missing(f"evaluating `{expression}` raised {error.get('type')}: {error.get('message', '')}")
        return reply.get("value")

    def request(self, message: dict) -> Any:
        """One operation on the answer in the kernel (called by the proxies while a check runs)."""
        from labkit.checks import _TimeUp

        if self.dead:
            raise KernelDied()
        self.requests += 1
        n = self.requests
        try:
            bridge._write(self.folder, f"in-{n}", message, None)
        except bridge.BridgeError as e:  # the check passed something that is not plain data: a bug in the check
            raise RuntimeError(f"labkit grader: {e}") from None
        left = (self.deadline or time.monotonic() + 10) - time.monotonic()
        if left <= 0:
            raise _TimeUp
        status = self.run(f"__import__('labkit.bridge').bridge.serve({str(self.folder)!r}, {n})", left)
        if status == "died":
            raise KernelDied()
        if status in ("timeout", "hung"):
            raise _TimeUp
        try:
            reply = bridge._read(self.folder, f"out-{n}", self)
        except bridge.BridgeError as e:
            raise bridge.StudentError(f"the answer's result could not be passed to the grader: {e}") from None
        if not isinstance(reply, dict) or ("value" not in reply and "error" not in reply):
            raise bridge.StudentError("the kernel gave a malformed reply")
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            bridge.raise_from_kernel(error)
        return reply["value"]


def _wait(result):
    """The value of a kernel manager's call, whether it is a coroutine or not."""
    import inspect

    from jupyter_core.utils import run_sync

    if not inspect.isawaitable(result):
        return result

    async def wait():
        return await result

    return run_sync(wait)()


@dataclass
class Missing:
    """An answer that could not be read from the kernel, and why."""

    reason: str


def end_processes(marker: str, known=()) -> list[int]:
    """SIGKILL the given processes and every process whose environment carries ``MARKER=marker``."""
    import psutil

    victims = {p.pid: p for p in known}
    for proc in psutil.process_iter():
        if proc.pid in victims or proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARKER) == marker:
                victims[proc.pid] = proc
        except psutil.Error:
            continue
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # A killed process whose parent died too stays a zombie until init reaps it, which can take seconds in a
    # container; a zombie holds no memory, ports or files, so it counts as ended.
    deadline = time.monotonic() + 5
    alive = list(victims.values())
    while alive and time.monotonic() < deadline:
        alive = [proc for proc in alive if _still_running(proc)]
        if alive:
            time.sleep(0.02)
    return sorted(victims)


def _still_running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone
        return False


# --------------------------------------------------------------------------- one submission

"""The sandbox around a submission's code: bubblewrap (``bwrap``) over Linux's namespaces, never a home-made one.

Each submission gets boxes nested in one another, each a bwrap sandbox:

- the worker's box (``worker_command``): the grader process that holds the key, computes the verdicts and
  sends the result to the main process over a pipe. Its own user, PID and network namespaces (loopback only), a
  read-only view of the system, the Python environment, the course, the solutions and its own submission file,
  and a size-capped tmpfs ``/tmp`` that holds the submission's work folder (the disk limit). The output folder,
  the key file and every other submission do not exist in it. It dies with the main process
  (``--die-with-parent``), and every box in it dies with it.
- the kernel's box (``Policy.wrap``), nested inside: its own user, PID and network namespaces (when the grader
  ends the kernel, every process in the box ends, whatever it did: double fork, ``setsid``, a cleaned
  environment), a private ``/tmp``, the same read-only view without the submission file, and its work folder
  as the only writable place. Memory (address space) and processes are capped.
- a check server's box (``Policy.wrap(..., own_network=False)``): MLServer loading the student's runtime for a
  check gets the kernel's limits and view, in the worker's loopback-only network so the check can reach it.

There is no fallback on util-linux ``unshare`` where ``bwrap`` is missing: ``unshare`` makes the namespaces, but
the filesystem view (read-only binds, a fresh root, hidden files, capped tmpfs) would have to be built by hand
inside them, the home-made sandbox this module avoids. Without ``bwrap`` the grader stops and says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private")
ENV_KEPT = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH", "PYENV_VERSION",
            "OMP_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL")
HIDDEN_PROC = "/.labkit-hidden"  # where the worker's box keeps the machine's /proc out of reach (see Policy.box)
HOW = ("grade on Linux with bubblewrap (`apt-get install bubblewrap`) and unprivileged user namespaces, for example "
       "in a Linux container or VM, or pass --no-sandbox if you trust every submission")
# Runs before a box: caps memory (address space) and processes, which every process in the box inherits, joins
# a pids cgroup when one is given (as root, where RLIMIT_NPROC does not apply), asks for SIGKILL when its parent
# dies (kept across exec: bwrap's own --die-with-parent comes too late if the parent dies while bwrap starts, and
# the box would outlive it), then becomes bwrap.
LIMITS = ("import os, resource, signal, sys\n"
          "memory, processes, cgroup, parent = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])\n"
          "if sys.platform.startswith('linux'):\n"
          "    import ctypes\n"
          "    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
          "    if os.getppid() != parent:\n"
          "        os._exit(1)  # the parent died before that: nothing to run for\n"
          "if cgroup:\n    open(os.path.join(cgroup, 'cgroup.procs'), 'w').write(str(os.getpid()))\n"
          "if memory > 0:\n    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))\n"
          "if processes > 0:\n    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))\n"
          "os.execvp(sys.argv[6], sys.argv[6:])")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be had on this machine (the message says why and how to get one)."""


def limited(command: list[str], memory: int = 0, processes: int = 0, cgroup: str = "") -> list[str]:
    """``command`` run under the given limits, by a child of this process that dies with it (the standard library
    only: it costs a few milliseconds)."""
    return [sys.executable, "-I", "-S", "-c", LIMITS, str(memory), str(processes), cgroup, str(os.getpid()), "--",
            *command]


@functools.lru_cache(maxsize=1)
def why_not() -> str | None:
    """None when a sandbox can be had here, else one line that says why not."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Linux namespaces"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed (util-linux `unshare` alone makes namespaces but not the "
                "read-only view that hides the key and the other submissions)")
    policy = Policy(_outermost(python_paths()))
    try:  # a kernel's box in a worker's box, as a grading run makes them
        probe = subprocess.run([*policy.box(nested=True), "--", *policy.box(), "--", "true"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap did not run ({e})"
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        return f"bwrap cannot create namespaces here (user namespaces disabled?): {reason}"
    return None


def require() -> None:
    reason = why_not()
    if reason:
        raise SandboxUnavailable(f"no sandbox for student code: {reason}; {HOW}")


@functools.lru_cache(maxsize=1)
def _bwrap_options() -> str:
    try:
        return subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def python_paths() -> list[str]:
    """What this Python needs to run: its prefixes and every folder on its path (the venv, editable sources)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(os.path.realpath(sys.executable)).parent.parent)}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(paths)


def _outermost(paths) -> list[str]:
    """Absolute paths without those inside another one of them or inside a system folder, shortest first."""
    kept: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths}, key=lambda p: (len(p), p)):
        if path == "/" or not os.path.exists(path):
            continue
        if not any(_inside(path, k) for k in [*kept, *SYSTEM]):
            kept.append(path)
    return kept


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass
class Policy:
    """What the boxes of one run may see, and the limits of a kernel's box."""

    readable: list[str]  # bound read-only, each at its own path: the environment, the course, the solutions
    hidden: list[str] = field(default_factory=list)  # never visible: the output folder, the key, the submissions
    memory_bytes: int = 0  # address space of each process
    max_processes: int = 0  # processes and threads of one box (RLIMIT_NPROC; a pids cgroup as root)
    tmp_bytes: int = 256 * 2**20  # a box's private /tmp (a tmpfs)

    @classmethod
    def for_run(cls, readable, hidden, memory_mb: int, max_processes: int) -> Policy:
        return cls(_outermost([*python_paths(), *readable]), [os.path.abspath(p) for p in hidden],
                   memory_mb * 2**20, max_processes)

    def to_json(self) -> dict:
        return dict(vars(self))

    def box(self, writable=(), *, own_network: bool = True, extra_readable=(), tmp_bytes: int | None = None,
            nested: bool = False) -> list[str]:
        """bwrap's arguments for one box (up to the ``--`` before the command)."""
        args = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--die-with-parent"]
        if not nested:  # the worker's box keeps what it needs to make the boxes nested in it
            args += ["--cap-drop", "ALL"]
            if "--disable-userns" in _bwrap_options():
                args.append("--disable-userns")  # student code cannot make namespaces of its own
        if own_network:
            args.append("--unshare-net")  # bwrap brings up lo in it
        for path in SYSTEM:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        if nested:
            # A box nested in this one can mount a /proc of its own only if a whole procfs, no part of it covered,
            # is mounted in its view (the kernel's rule against revealing what a mount hides), and bwrap's own
            # --proc covers a few of its folders. So the machine's /proc is bound too, under an empty read-only
            # folder laid over it: mounted, but no path leads to it.
            args += ["--bind", "/proc", f"{HIDDEN_PROC}/proc", "--tmpfs", HIDDEN_PROC, "--remount-ro", HIDDEN_PROC]
        args += ["--proc", "/proc"]  # the box's own, for its own PID namespace
        args += ["--dev", "/dev", "--size", str(tmp_bytes or self.tmp_bytes), "--tmpfs", "/tmp",
                 "--size", str(64 * 2**20), "--tmpfs", "/dev/shm"]
        for path in self.readable:
            args += ["--ro-bind", path, path]
        shown = [*SYSTEM, *self.readable]
        masks = []  # empty, read-only folders over what must not be seen (once what is shown inside them is bound)
        for path in [*SECRETS, *self.hidden]:
            if os.path.lexists(path) and any(_inside(path, folder) for folder in shown):
                if os.path.isdir(path) and not os.path.islink(path):
                    args += ["--tmpfs", path]
                    masks.append(path)
                else:
                    args += ["--ro-bind", "/dev/null", path]
        for path in extra_readable:
            args += ["--ro-bind", str(path), str(path)]
        for path in writable:
            args += ["--bind", str(path), str(path)]
        for path in masks:
            args += ["--remount-ro", path]
        return args

    def wrap(self, command: list[str], writable, *, cwd=None, own_network: bool = True, extra_readable=()) -> list[str]:
        """``command`` in a kernel's (or, with ``own_network=False``, a check server's) box, under its limits."""
        box = self.box(writable, own_network=own_network, extra_readable=extra_readable)
        if cwd is not None:
            box += ["--chdir", str(cwd)]
        # ipykernel ends itself when its parent is pid 1, as bwrap's init is in the box: no parent to watch here,
        # the box ends with the worker (--die-with-parent).
        box += ["--setenv", "JPY_PARENT_PID", "1"]
        return limited([*box, "--", *command], self.memory_bytes, self.max_processes if os.geteuid() else 0)


def worker_command(policy: Policy, submission: Path, disk_bytes: int, command: list[str],
                   cgroup: str = "") -> list[str]:
    """The worker's box: loopback-only network, the read-only view plus its own submission, ``disk_bytes`` of
    /tmp for the work folder, and no output folder, key or other submission."""
    box = policy.box(own_network=True, extra_readable=[submission.resolve()], tmp_bytes=disk_bytes, nested=True)
    # Its own PID namespace: the worker sees and signals only its own processes and its boxes', and every process
    # in it ends when it does. No memory cap (the kernel has one).
    return limited([*box, "--", *command], 0, 0, cgroup)


def kernel_env(env: dict) -> dict:
    """The environment a boxed kernel gets: nothing of the instructor's but what Python and locale need."""
    kept = {k: v for k, v in env.items() if k in ENV_KEPT or k.startswith(("LABKIT_", "LC_"))}
    kept.update(HOME="/tmp", TMPDIR="/tmp")
    return kept


def pids_cgroup(limit: int) -> str:
    """As root, a pids cgroup capped at ``limit`` for one submission ('' when there is none to be had): root's
    processes ignore RLIMIT_NPROC. The caller removes it with ``remove_cgroup`` once the box has ended."""
    if limit <= 0 or os.geteuid() != 0:
        return ""
    for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        try:
            if base == "/sys/fs/cgroup" and "pids" not in Path(base, "cgroup.subtree_control").read_text():
                continue
            path = Path(base, f"labkit-{uuid.uuid4().hex[:12]}")
            path.mkdir()
            (path / "pids.max").write_text(str(limit))
            return str(path)
        except OSError:
            continue
    return ""


def remove_cgroup(path: str) -> None:
    if path:
        import time

        for _ in range(50):  # its last processes may take a moment to be reaped
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)

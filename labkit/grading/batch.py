"""Grade a batch of submissions: find them, grade each in its own worker (``workers`` at a time), write each row
as soon as it is graded, resume a run that was stopped, grade one shard of a class and merge the shards."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import select
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from labkit import course
from labkit.grading import reports, sandbox
from labkit.grading.kernel import end_processes
from labkit.grading.lab import Lab, Options, Result, _check_seconds, _feedback
from labkit.grading.notebook import key_id

MAX_RESULT_BYTES = 64 * 2**20  # a result bigger than this is not a result


@dataclass
class Submission:
    student: str
    path: Path


def find_submissions(paths: list[Path | str], lab: Lab) -> tuple[list[Submission], list[str]]:
    """Notebooks named on the command line or found in folders; the student id from the notebook's metadata
    (``labkit.student``), else the file name (the folder's name when the file keeps the lab's own name)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if not any(part.startswith(".") for part in p.parts[
                len(path.parts):]))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    submissions, notes, seen = [], [], set()
    for path in found:
        student = _student_id(path, lab)
        if student in seen:
            base, n = student, 2
            while f"{base}-{n}" in seen:
                n += 1
            student = f"{base}-{n}"
            notes.append(f"{path}: the id {base} was taken, graded as {student}")
        seen.add(student)
        submissions.append(Submission(student, path))
    return submissions, notes


def _student_id(path: Path, lab: Lab) -> str:
    name = ""
    try:
        if path.stat().st_size < 50 * 2**20:
            name = str(json.loads(path.read_text()).get("metadata", {}).get("labkit", {}).get("student", ""))
    except (ValueError, OSError, AttributeError, UnicodeDecodeError):
        name = ""
    if not name:
        name = path.parent.name if path.stem == lab.solution.stem and path.parent.name else path.stem
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name).strip("._") or "unnamed"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (K from 1 to N) as ``(K, N)``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--shard takes K/N with 1 <= K <= N, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def in_shard(student: str, shard: tuple[int, int]) -> bool:
    """Disjoint and deterministic: a student's shard depends on the id alone, not on the other submissions."""
    k, n = shard
    return int.from_bytes(hashlib.sha256(student.encode()).digest()[:8], "big") % n == k - 1


def grade(submissions: list[Path | str], lab: str | Lab, out: Path | str = "grades", *, workers: int = 1,
          options: Options | None = None, solutions: Path | str | None = None, progress: bool = True,
          shard: tuple[int, int] | None = None, key_file: Path | str | None = None) -> list[Result]:
    """Grade every submission (or one ``shard`` of them) into ``out``: grades.csv and feedback/ gain each row as it
    is graded, so a stopped run loses nothing; running again skips the rows already graded from the same file
    with the same key, then writes summary.{json,html,png} and anomalies.log."""
    lab = lab if isinstance(lab, Lab) else Lab.find(lab, solutions)
    if not lab.exercises:
        raise ValueError(f"{lab.solution} has no check(\"NN.slug\", answer) cells to grade")
    options = options or Options()
    if options.sandbox:
        sandbox.require()  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, notes = find_submissions(submissions, lab)
    if shard is not None:
        jobs = [job for job in jobs if in_shard(job.student, shard)]
    key_path = Path(key_file) if key_file else out / ".grading-key"
    key = _key(key_path)
    noted = {note.rsplit(" ", 1)[-1]: note for note in notes}
    earlier = reports.read_results(out)
    done: dict[str, Result] = {}
    todo = []
    for job in jobs:
        previous = earlier.get(job.student)
        if previous is not None and _still_valid(previous, job, lab, key):
            done[job.student] = previous
        else:
            todo.append(job)
    if done:
        print(f"labkit grade: {len(done)} already graded from the same files with this key: kept", file=sys.stderr)
    reports.write_rows(out, lab, list(done.values()))

    def finished(result: Result) -> None:
        if result.student in noted and noted[result.student] not in result.anomalies:
            result.anomalies.append(noted[result.student])
        done[result.student] = result
        reports.write_rows(out, lab, list(done.values()))

    hidden = [out, key_path, *submissions]
    _run(todo, lab, key, options, max(1, workers), progress, hidden, finished)
    results = [done[job.student] for job in jobs]
    reports.write_reports(out, lab, results)
    return results


def _still_valid(previous: Result, job: Submission, lab: Lab, key: bytes) -> bool:
    try:
        sha = hashlib.sha256(job.path.read_bytes()).hexdigest()
    except OSError:
        return False
    return (previous.sha256, previous.key_id, previous.lab, previous.file) == (sha, key_id(key), lab.number,
                                                                               str(job.path))


def _key(path: Path) -> bytes:
    """The secret that seeds the hidden cases; kept with the output so that re-runs give the same grades (shards
    share one with ``--key``)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _hard_limit(lab: Lab, options: Options) -> float:
    checks = sum(_check_seconds(e.name) for e in lab.exercises)
    per_pass = options.timeout_notebook + checks + len(lab.exercises) * options.timeout_cell + 30
    return per_pass * (options.max_restarts + 1) + 60


class _Worker:
    """One worker process grading one submission; its result arrives over a pipe."""

    def __init__(self, job: Submission, lab: Lab, options: Options, policy, logs: Path):
        """Start the worker; it imports what it needs, then waits for ``send``."""
        self.job = job
        self.marker = uuid.uuid4().hex
        self.started = time.monotonic()
        self.cgroup = sandbox.pids_cgroup(options.max_processes) if policy is not None else ""
        read, write = os.pipe()
        command = [sys.executable, "-m", "labkit.grading.worker", str(write), lab.number]
        if policy is not None:
            command = sandbox.worker_command(policy, job.path, options.disk_mb * 2**20, command, self.cgroup)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if policy is not None:
            env["TMPDIR"] = "/tmp"  # the box's own (the submission's disk): nothing else is writable in there
        with contextlib.suppress(course.CourseNotFound):
            env[course.ENV] = str(course.root())  # the kernel finds the course from its copy of labs/ too
        self.log = logs / f"{self.marker}.log"
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                stderr=log, pass_fds=(write,), start_new_session=True, env=env)
        finally:
            os.close(write)
        self.channel = read
        self.received = bytearray()
        self.closed = False

    def send(self, lab: Lab, key: bytes, options: Options, policy) -> None:
        """Give the worker its job; its time limit counts from now."""
        self.started = time.monotonic()
        job = self.job
        payload = {"path": str(job.path.resolve()), "file": str(job.path), "student": job.student, "lab": lab.number,
                   "solutions": str(lab.solution.parent), "key": key.hex(), "marker": self.marker,
                   "options": vars(options), "policy": policy.to_json() if policy is not None else None}
        try:
            self.process.stdin.write(json.dumps(payload).encode())
            self.process.stdin.close()
        except OSError:
            pass  # it died at once: its result says so

    def read(self) -> None:
        chunk = os.read(self.channel, 1 << 16)
        if not chunk or len(self.received) > MAX_RESULT_BYTES:
            self.closed = True
        else:
            self.received += chunk

    def finish(self, lab: Lab, overdue: bool) -> Result:
        if overdue or not self.closed:
            self.kill()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
        os.close(self.channel)
        end_processes(self.marker)  # without a sandbox, what the kernel left; with one, nothing is left
        sandbox.remove_cgroup(self.cgroup)
        seconds = time.monotonic() - self.started
        try:
            last = self.log.read_text(errors="replace").strip().splitlines()[-1:]
        except OSError:
            last = []
        return _result(self.job, lab, bytes(self.received), overdue, self.process.returncode, seconds, last)

    def kill(self) -> None:
        import signal

        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the worker and what runs beside it


def _run(jobs: list[Submission], lab: Lab, key: bytes, options: Options, workers: int, progress: bool,
         hidden: list, finished) -> None:
    """Each submission in its own worker, ``workers`` at a time, killed if it outlives every time limit."""
    from tqdm.auto import tqdm

    policy = None
    if options.sandbox:
        readable = [course.root(), lab.solution.parent, lab.folder] if _has_course() else [lab.solution.parent,
                                                                                             lab.folder]
        policy = sandbox.Policy.for_run(readable, hidden, options.memory_mb, options.max_processes)
    limit = _hard_limit(lab, options)
    queue = list(jobs)
    running: dict[int, _Worker] = {}
    spare: list[_Worker] = []  # the next worker, started early: its imports overlap the others' grading
    bar = tqdm(total=len(jobs), desc=f"grading lab {lab.number}", unit="notebook", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="labkit-workers-") as logs:
        try:
            while queue or running or spare:
                while (queue or spare) and len(running) < workers:
                    worker = spare.pop(0) if spare else _Worker(queue.pop(0), lab, options, policy, Path(logs))
                    worker.send(lab, key, options, policy)
                    running[worker.channel] = worker
                if queue and not spare:
                    spare.append(_Worker(queue.pop(0), lab, options, policy, Path(logs)))
                ready, _, _ = select.select(list(running), [], [], 1)
                for fd in ready:
                    running[fd].read()
                for fd, worker in list(running.items()):
                    overdue = time.monotonic() - worker.started > limit
                    if worker.closed or overdue:
                        del running[fd]
                        finished(worker.finish(lab, overdue))
                        bar.update()
        finally:  # Ctrl-C or an error of ours: the workers end with us (rows already written stay)
            for worker in [*running.values(), *spare]:
                worker.kill()
                worker.process.wait()
                end_processes(worker.marker)
                sandbox.remove_cgroup(worker.cgroup)
            bar.close()


def _has_course() -> bool:
    try:
        course.root()
        return True
    except course.CourseNotFound:
        return False


def _result(job: Submission, lab: Lab, received: bytes, overdue: bool, exitcode, seconds: float,
            log: list[str]) -> Result:
    try:
        record = json.loads(received.decode())
        seconds = record.pop("seconds", seconds)
        return Result(**record, seconds=seconds)
    except (ValueError, TypeError, UnicodeDecodeError):
        status = "TIMEOUT" if overdue else "ERROR"
        why = ("ran over every time limit and was stopped" if overdue
               else f"its grader process ended with code {exitcode} before it sent a result"
               + (f" ({log[-1][:300]})" if log else ""))
        exercises = [_feedback(e, "error", "Not graded: the grader could not finish this notebook.")
                     for e in lab.exercises]
        try:
            sha = hashlib.sha256(job.path.read_bytes()).hexdigest()
        except OSError:
            sha = ""
        return Result(job.student, str(job.path), status, 0.0, lab.max_score, exercises, [why], sha256=sha,
                      lab=lab.number, seconds=seconds)


def merge(parts: list[Path | str], out: Path | str, solutions: Path | str | None = None) -> list[Result]:
    """Combine the output folders of the shards of one class into ``out``: the same files a single run gives."""
    results: dict[str, Result] = {}
    labs, keys = set(), set()
    for part in map(Path, parts):
        found = reports.read_results(part)
        if not (part / "grades.csv").exists():
            raise FileNotFoundError(f"{part} holds no grades.csv: not the output of `labkit grade`")
        for student, result in found.items():
            if student in results:
                raise ValueError(f"{student} is in more than one part ({part}): were the shards of one class?")
            results[student] = result
            labs.add(result.lab)
            keys.add(result.key_id)
    if len(labs) > 1 or len(keys - {""}) > 1:
        raise ValueError("the parts were graded for different labs or with different keys: give every shard the "
                         "same --key")
    if not results:
        raise ValueError("the parts hold no graded submission")
    lab = Lab.find(labs.pop(), solutions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged = sorted(results.values(), key=lambda r: r.student)
    reports.write_reports(out, lab, merged)
    return merged

"""The grader against hostile submissions: each tampering class is graded 0 on the exercise it tampers with,
every other submission in the same batch is graded right, and no process of theirs is alive afterwards.

Every hostile cell first checks that it runs in namespaces of its own (its /proc/self/ns links differ from the
test's): outside a sandbox it does nothing harmful and answers right instead, so that a grader without a
sandbox fails these tests rather than this machine. No traffic ever leaves the machine: the connect to a
TEST-NET address runs only inside a network namespace of its own, where it must fail with ENETUNREACH.
"""

import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from test_grading import CORRECT_00, LABS, WRONG_00, craft, no_grading_processes

from labkit.grading import Options, grade, sandbox
from labkit.grading.notebook import key_id

pytestmark = pytest.mark.skipif(sandbox.why_not() is not None, reason=f"no sandbox here: {sandbox.why_not()}")

TAG = f"labkit-tamper-{uuid.uuid4().hex[:8]}"  # in the command line of every process a hostile cell starts
HOST_NS = {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("pid", "net", "mnt")}
SAFE = [os.getpid(), *(p.pid for p in psutil.Process().parents())]  # never killed, even by a broken sandbox

GUARD = f"""
import errno, os, signal, socket, subprocess, sys, time
HOST_NS = {HOST_NS!r}
SAFE = {SAFE!r}
TAG = {TAG!r}
def boxed(kind):
    return os.readlink(f"/proc/self/ns/{{kind}}") != HOST_NS[kind]
"""
RIGHT = "lambda codes: sum(c >= 400 for c in codes) / len(codes) if codes else 0.0"
WRONG = "lambda codes: 0.5"


def walker(roots: list[str]) -> str:
    """Code that lists the files under ``roots`` (bounded), as a hostile cell would look for targets."""
    return f"""
def files(roots={roots!r}, limit=20000):
    seen = 0
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
            for name in names:
                seen += 1
                if seen > limit:
                    return
                yield os.path.join(folder, name)
"""


def daemon(roots) -> str:
    """Double fork, setsid, a cleaned environment; then rewrites every report or result file it finds, for 90 s."""
    body = walker(roots) + """
import json, time
deadline = time.time() + 90
while time.time() < deadline:
    for path in files():
        try:
            if path.endswith("grades.csv"):
                open(path, "w").write("student,status,00.error_rate,total,max,file\\n")
            elif path.endswith(".json"):
                record = json.load(open(path))
                if isinstance(record, dict) and "exercises" in record:
                    record["score"] = record.get("max_score", 1)
                    for e in record["exercises"]:
                        e.update(passed=True, points=e.get("max_points", 1), status="passed")
                    json.dump(record, open(path, "w"))
        except Exception:
            pass
    time.sleep(0.2)
"""
    return GUARD + f"""
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve(sys.executable, [sys.executable, "-c", {body!r}, TAG], {{}})
    os._exit(0)
os.waitpid(pid, 0)
error_rate = {WRONG}
"""


KILLER = GUARD + f"""
if boxed("pid"):
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    try:
        os.kill(-1, signal.SIGKILL)  # every process it may signal
    except OSError:
        pass
else:  # no sandbox: its ancestors, up to the test's own process (what killed whole runs before)
    import psutil
    for parent in psutil.Process().parents():
        if parent.pid in SAFE:
            break
        parent.kill()
error_rate = {WRONG}
"""


def reader(roots, other: str) -> str:
    """Looks for the grading key and another student's notebook; with either it would get full marks."""
    return GUARD + walker(roots) + f"""
stolen = []
for path in files():
    name = os.path.basename(path)
    if name == ".grading-key" or name == "{other}":
        try:
            stolen.append(open(path).read())
        except OSError:
            pass
error_rate = ({RIGHT}) if stolen else ({WRONG})
"""


NETWORK = GUARD + f"""
reached = True  # without a network namespace of its own it sends nothing, and counts as reached
if boxed("net"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1, discard port: inside the box there is no route
    except OSError as e:
        reached = e.errno != errno.ENETUNREACH
    finally:
        s.close()
error_rate = ({RIGHT}) if reached else ({WRONG})
"""

FORK_BOMB = GUARD + f"""
stopped, children = False, []
if boxed("pid"):
    try:
        while len(children) < 3000:  # bounded: the process limit must stop it long before
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
    except OSError:
        stopped = True
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
error_rate = ({WRONG}) if stopped else ({RIGHT})
"""

DISK_FILLER = GUARD + f"""
full = False
if boxed("mnt"):
    written = 0
    try:
        with open("filler.bin", "wb") as f:
            while written < 2 * 2**30:  # bounded: the work folder's cap must stop it long before
                f.write(b"x" * 2**20)
                written += 2**20
    except OSError as e:
        full = e.errno == errno.ENOSPC
    os.remove("filler.bin")
error_rate = ({WRONG}) if full else ({RIGHT})
"""


@pytest.fixture(scope="module")
def hostile_00(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("grades")
    roots = ["/tmp", str(out), str(folder), str(Path.home()), str(LABS.parent)]
    corpus = {"correct": CORRECT_00, "wrong": WRONG_00, "daemon": daemon(roots), "killer": KILLER,
              "reader": reader(roots, "correct.ipynb"), "network": NETWORK, "fork_bomb": FORK_BOMB,
              "disk_filler": DISK_FILLER}
    for name, answer in corpus.items():
        craft(folder, name, LABS / "00_welcome.ipynb", "c08", "c09", answer)
    options = Options(timeout_cell=30, timeout_notebook=120, max_processes=160, disk_mb=128)
    results = grade([folder], "00", out, workers=2, options=options, progress=False)
    return {r.student: r for r in results}, out


def tampering_processes() -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if TAG in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


@pytest.mark.parametrize("name", ["daemon", "killer", "reader", "network", "fork_bomb", "disk_filler"])
def test_each_hostile_submission_scores_nothing(hostile_00, name):
    results, _ = hostile_00
    assert results[name].score == 0, (results[name].status, results[name].anomalies, results[name].exercises)


def test_the_rest_of_the_batch_is_graded_right(hostile_00):
    results, out = hostile_00
    assert (results["correct"].status, results["correct"].score) == ("OK", 1)
    assert (results["wrong"].status, results["wrong"].score) == ("OK", 0)
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert len(rows) == 8 and rows["correct"]["total"] == "1"  # the daemon rewrote nothing
    assert json.loads((out / "feedback" / "wrong.json").read_text())["score"] == 0


def test_no_hostile_process_outlives_grading(hostile_00):
    assert tampering_processes() == []
    assert no_grading_processes() == []


def test_the_network_failure_is_unreachable_not_a_timeout(tmp_path):
    """Inside a box as the kernel gets it, a connect to a non-loopback address fails at once with ENETUNREACH,
    while loopback works."""
    policy = sandbox.Policy.for_run([LABS.parent], [], 1024, 64)
    probe = ("import errno, socket, time\n"
             "s = socket.socket(); s.settimeout(1); t = time.monotonic()\n"
             "try:\n    s.connect(('192.0.2.1', 9)); print('connected')\n"
             "except OSError as e:\n    print(errno.errorcode.get(e.errno), round(time.monotonic() - t, 2))\n"
             "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()\n"
             "socket.create_connection(server.getsockname(), timeout=1); print('loopback ok')\n")
    command = policy.wrap([sys.executable, "-c", probe], [tmp_path], cwd=tmp_path)
    lines = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.split("\n")
    reason, seconds = lines[0].split()
    assert reason == "ENETUNREACH" and float(seconds) < 0.5
    assert lines[1] == "loopback ok"


# ------------------------------------------------------------------ the same inside a check's MLServer

RUNTIME_TAMPER = """
import os as _os, signal as _signal, socket as _socket, errno as _errno, sys as _sys
_HOST = {host!r}
_SAFE = {safe!r}
def _boxed(kind):
    return _os.readlink(f"/proc/self/ns/{{kind}}") != _HOST[kind]
_escaped = not (_boxed("pid") and _boxed("net") and _boxed("mnt"))
if not _escaped:
    if _os.fork() == 0:  # a detached daemon
        _os.setsid()
        if _os.fork() == 0:
            _os.execve(_sys.executable, [_sys.executable, "-c", "import time; time.sleep(90)", {tag!r}], {{}})
        _os._exit(0)
    for _root in {roots!r}:  # the key and the other submissions
        for _folder, _dirs, _names in _os.walk(_root):
            _dirs[:] = [d for d in _dirs if d not in ("proc", "sys", "dev")]
            if ".grading-key" in _names or "solution.ipynb" in _names:
                _escaped = True
    _s = _socket.socket()
    _s.settimeout(1)
    try:
        _s.connect(("192.0.2.1", 9))
        _escaped = True
    except OSError as _e:
        _escaped = _escaped or _e.errno != _errno.ENETUNREACH
    for _name in _os.listdir("/proc"):  # every process it can see, except itself and its own server
        if _name.isdigit() and int(_name) not in (_os.getpid(), _os.getppid(), 1):
            try:
                _os.kill(int(_name), _signal.SIGKILL)
            except OSError:
                pass
if not _escaped:
    raise ImportError("stayed in the sandbox")
"""


# A pickle that runs code when it is loaded: in the grader's worker it would find the grading key on the stack (it
# knows the key's fingerprint, not the key) and forge its own row (full marks, the key in an anomaly); anywhere
# else it finds no key and raises.
PICKLE_TAMPER = """
import hashlib, hmac, sys
def grading_key(value):
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            return None
    if isinstance(value, bytes) and hmac.new(value, b"labkit key id", hashlib.sha256).hexdigest()[:16] == %r:
        return value
    return None
key = None
frame = sys._getframe()
while frame is not None and key is None:
    for value in list(frame.f_locals.values()):
        key = key or grading_key(value) or (grading_key(value.get("key")) if isinstance(value, dict) else None)
    frame = frame.f_back
if key is None:
    raise RuntimeError("stayed in the sandbox: no grading key in reach")
import labkit.grading.lab as lab
original = lab.Result.record
def forged(self):
    record = original(self)
    record["score"] = record["max_score"]
    for exercise in record["exercises"]:
        exercise.update(passed=True, status="passed", points=exercise["max_points"])
    record["anomalies"] = ["stolen key " + key.hex()]
    return record
lab.Result.record = forged
raise RuntimeError("forged the row")
"""


@pytest.fixture(scope="module")
def hostile_02(tmp_path_factory):
    """Lab 02's solution beside two tamperers: a runtime file that tampers when MLServer imports it, and a
    model.joblib whose unpickling runs code (``__reduce__``), wherever a check loads it."""
    folder = tmp_path_factory.mktemp("subs02")
    out = tmp_path_factory.mktemp("out02")
    solution = LABS / "solutions" / "02_custom_runtime.ipynb"
    nbformat.write(nbformat.read(solution, as_version=4), folder / "solution.ipynb")
    code = RUNTIME_TAMPER.format(host=HOST_NS, safe=SAFE, tag=TAG, roots=["/tmp", str(out), str(folder)])
    key = secrets.token_bytes(32)
    (out / ".grading-key").write_text(key.hex())
    runtime_cell = f"with open(WORK / 'strict_runtime.py', 'a') as f:\n    f.write({code!r})\n"
    payload = PICKLE_TAMPER % key_id(key)
    pickle_cell = (f"class Payload:\n    def __reduce__(self):\n        return (exec, ({payload!r}, {{}}))\n\n\n"
                   "joblib.dump(Payload(), STRICT / 'model.joblib')\n")
    # Each before a cell of the solution: the runtime file before c21 copies it into the model folder, the
    # pickle after c21 wrote the model, just before 02.runtime's check (c22).
    cells = {"runtime_tamperer": ("c21", runtime_cell), "pickle_tamperer": ("c22", pickle_cell)}
    for name, (before, cell) in cells.items():
        nb = nbformat.read(solution, as_version=4)
        at = next(i for i, c in enumerate(nb.cells) if c.get("id") == before)
        nb.cells.insert(at, nbformat.v4.new_code_cell(cell))
        nbformat.write(nb, folder / f"{name}.ipynb")
    results = {r.student: r for r in grade([folder], "02", out, workers=2, progress=False)}
    return results, out


def test_a_runtime_that_tampers_on_import_gets_nothing_and_harms_no_one(hostile_02):
    """02.runtime serves the student's runtime in a check's MLServer, which imports it: that server is boxed
    like the kernel. The tampering runtime would work only if it got out; the solution beside it is untouched."""
    results, _ = hostile_02
    verdicts = {e["name"]: e for e in results["runtime_tamperer"].exercises}
    assert verdicts["02.runtime"]["points"] == 0, verdicts["02.runtime"]["message"]
    assert "stayed in the sandbox" in verdicts["02.runtime"]["message"]
    assert (results["solution"].status, results["solution"].score) == ("OK", results["solution"].max_score)
    assert tampering_processes() == []
    assert no_grading_processes() == [], _describe(no_grading_processes())


def test_a_pickle_that_runs_code_is_loaded_only_in_a_box(hostile_02):
    """No check unpickles a student's file in the grader's worker (which holds the key and sends the row): the
    model the check compares the runtime with is loaded in the check's boxed MLServer."""
    results, out = hostile_02
    tamperer = results["pickle_tamperer"]
    verdicts = {e["name"]: e for e in tamperer.exercises}
    assert verdicts["02.runtime"]["points"] == 0, verdicts["02.runtime"]["message"]
    assert "stayed in the sandbox" in verdicts["02.runtime"]["message"]
    assert tamperer.score < tamperer.max_score
    key = (out / ".grading-key").read_text().strip()
    assert not any(key in path.read_text(errors="replace") for path in out.rglob("*") if path.is_file()
                   and path.name != ".grading-key")
    assert (results["solution"].status, results["solution"].score) == ("OK", results["solution"].max_score)
    assert no_grading_processes() == [], _describe(no_grading_processes())


def _describe(pids):
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out.append((pid, proc.status(), proc.environ().get("LABKIT_GRADING_RUN"), " ".join(proc.cmdline())[:120],
                        round(time.time() - proc.create_time(), 1)))
        except psutil.Error:
            pass
    return out


# ------------------------------------------------------------------ no row is lost; shards

def _labkit(*args, **kwargs):
    env = dict(os.environ, LABKIT_PROGRESS="off")
    return subprocess.Popen([sys.executable, "-m", "labkit.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _rows(path: Path) -> dict:
    with open(path) as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def class_of_four(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    for name, answer in {"ada": CORRECT_00, "bob": WRONG_00, "cy": CORRECT_00, "dee": WRONG_00}.items():
        craft(folder, name, LABS / "00_welcome.ipynb", "c08", "c09", answer)
    return folder


def test_a_killed_grader_keeps_its_rows_and_resumes(class_of_four, tmp_path):
    out = tmp_path / "out"
    run = _labkit("grade", str(class_of_four), "--lab", "00", "--out", str(out), "--workers", "1", "--quiet")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if (out / "grades.csv").exists() and len(_rows(out / "grades.csv")) >= 2:
            break
        time.sleep(0.2)
    assert run.poll() is None, run.communicate()
    os.kill(run.pid, signal.SIGKILL)  # the grader's own process only: its workers must end with it
    run.wait()
    kept = _rows(out / "grades.csv")
    assert 2 <= len(kept) < 4
    assert {s: r["total"] for s, r in kept.items()} == {s: {"ada": "1", "bob": "0", "cy": "1"}[s] for s in kept}
    time.sleep(1)
    assert no_grading_processes() == []
    stamps = {s: (out / "feedback" / f"{s}.json").stat().st_mtime_ns for s in kept}
    again = _labkit("grade", str(class_of_four), "--lab", "00", "--out", str(out), "--workers", "2", "--quiet")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"{len(kept)} already graded" in err
    assert {s: r["total"] for s, r in _rows(out / "grades.csv").items()} == {"ada": "1", "bob": "0", "cy": "1",
                                                                                "dee": "0"}
    assert {s: (out / "feedback" / f"{s}.json").stat().st_mtime_ns for s in kept} == stamps  # not graded again


def test_shards_merged_equal_a_single_run(class_of_four, tmp_path):
    single = tmp_path / "single"
    assert _labkit("grade", str(class_of_four), "--lab", "00", "--out", str(single), "--workers", "2",
                   "--quiet").wait(600) == 0
    key = single / ".grading-key"
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}"
        run = _labkit("grade", str(class_of_four), "--lab", "00", "--out", str(part), "--shard", f"{k}/3",
                      "--key", str(key), "--workers", "2", "--quiet")
        assert run.wait(600) == 0, run.communicate()
        parts.append(part)
    sizes = [len(_rows(p / "grades.csv")) for p in parts]
    assert sum(sizes) == 4  # disjoint, and together every submission
    merged = tmp_path / "merged"
    run = _labkit("grade", "--merge", *map(str, parts), "--out", str(merged))
    assert run.wait(120) == 0, run.communicate()
    for name in ["grades.csv", "summary.json", "anomalies.log",
                 *(f"feedback/{s}.{x}" for s in ("ada", "bob", "cy", "dee") for x in ("json", "html"))]:
        assert (merged / name).read_bytes() == (single / name).read_bytes(), name


def test_the_box_shows_the_course_read_only_and_hides_grades_key_and_other_submissions(tmp_path):
    course = tmp_path / "course"
    for name, text in {"grades/.grading-key": "secret", "subs/a.ipynb": "a", "subs/b.ipynb": "b",
                       "labs/runtime.py": "x"}.items():
        (course / name).parent.mkdir(parents=True, exist_ok=True)
        (course / name).write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    policy = sandbox.Policy.for_run([course], [course / "grades", course / "subs"], 1024, 64)
    probe = (f"import os\nc = {str(course)!r}\n"
             "print(sorted(os.listdir(c + '/grades')), sorted(os.listdir(c + '/subs')),\n"
             "      open(c + '/labs/runtime.py').read())\n"
             "for target in (c + '/labs/new.py', c + '/grades/x', 'here.txt'):\n"
             "    try:\n        open(target, 'w').write('x'); print('wrote', os.path.basename(target))\n"
             "    except OSError as e:\n        print('refused', os.path.basename(target), e.errno)\n"
             f"print(os.path.exists({str(tmp_path / 'course' / 'subs' / 'b.ipynb')!r}), os.listdir('/tmp'))\n")
    command = policy.wrap([sys.executable, "-c", probe], [work], cwd=work, extra_readable=[course / "subs" / "a.ipynb"])
    lines = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert lines[0] == "[] ['a.ipynb'] x"
    assert lines[1].startswith("refused new.py") and lines[2].startswith("refused x") and lines[3] == "wrote here.txt"
    assert lines[4].startswith("False")
    assert (work / "here.txt").exists() and not (course / "labs" / "new.py").exists()


def test_the_workers_box_has_its_own_pid_namespace_and_hides_the_machines_proc(tmp_path):
    """The worker sees only its own processes; the machine's /proc, kept mounted so that the boxes nested in the
    worker's can mount one of their own, is out of reach."""
    submission = tmp_path / "a.ipynb"
    submission.write_text("{}")
    policy = sandbox.Policy.for_run([LABS.parent], [], 1024, 64)
    probe = ("import os\n"
             "print(os.readlink('/proc/self/ns/pid'), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
             f"print(os.listdir({sandbox.HIDDEN_PROC!r}))\n")
    command = sandbox.worker_command(policy, submission, 64 * 2**20, [sys.executable, "-c", probe])
    lines = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.splitlines()
    namespace, pids = lines[0].split(" ", 1)
    assert namespace != HOST_NS["pid"]
    assert len(json.loads(pids)) <= 3, pids  # bwrap's init, the probe (and its wrapper)
    assert lines[1] == "[]"

import html
import json
import pkgutil
import resource
import time

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import labkit.checks as checks
from labkit.checks import MIME_TYPE, REGISTRY, Fail, Feedback, NotAttempted, check, names, register

STATUSES = {"passed", "failed", "not_attempted", "error"}
HINT = "Look at <b>len</b> & friends."


@pytest.fixture
def demo():
    """A throwaway check ``99.demo`` that really exercises the answer, removed afterwards."""

    @register("99.demo", points=2, hint=HINT)
    def demo_check(answer, rng):
        x = int(rng.integers(0, 10))
        if callable(answer):
            answer = answer(x)
        array = np.asarray(answer)
        if answer == x:
            return f"You returned the hidden value {x}."
        length = len(answer)
        if array.ndim != 1 or length != 3:
            raise Fail(f"Expected 3 values, got {length} <values> & more.")
        return None

    yield "99.demo"
    REGISTRY.pop("99.demo", None)


@pytest.fixture
def coin():
    """A check whose verdict depends only on its random generator."""

    @register("99.coin", points=1)
    def coin_check(answer, rng):
        if rng.integers(0, 2):
            raise Fail(f"hidden case {rng.integers(0, 1000)} failed")
        return f"hidden case {rng.integers(0, 1000)} passed"

    yield "99.coin"
    REGISTRY.pop("99.coin", None)


def assert_valid(feedback, name="99.demo"):
    assert isinstance(feedback, Feedback)
    assert feedback.status in STATUSES
    assert feedback.passed == (feedback.status == "passed")
    assert isinstance(feedback.message, str) and feedback.message
    assert feedback.name == name
    # everything a student or the grader will look at must render
    str(feedback)
    feedback._repr_html_()
    json.dumps(feedback._repr_mimebundle_()[MIME_TYPE])


# -- hostile answers ----------------------------------------------------------------------------


class Boom(Exception):
    pass


def _boom(*args, **kwargs):
    raise Boom("hostile")


class Hostile:
    """Every protocol the check may touch raises."""

    __eq__ = __ne__ = __len__ = __array__ = __repr__ = __str__ = __bool__ = __iter__ = _boom
    __getattr__ = _boom
    __hash__ = None


class HostileCallable(Hostile):
    def __call__(self, x):
        return Hostile()


class UnprintableError(Exception):
    def __str__(self):
        raise Boom("no message for you")


def raise_unprintable(x):
    raise UnprintableError()


def raise_system_exit(x):
    raise SystemExit(3)


def recurse(x):
    return recurse(x) + 1


def raise_not_implemented(x):
    raise NotImplementedError("Replace this line with your code")


def loop_forever(x):
    while True:
        pass


def sleep_forever(x):
    time.sleep(3600)


def loop_swallowing_errors(x):
    """A retry loop, as students write them around server calls: catches every Exception.

    It gives up by itself after 3 s so that a broken time limit fails the test instead of hanging it.
    """
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:  # noqa: SIM105 - the pattern under test
            time.sleep(0.01)
        except Exception:
            pass
    return [1, 2, 3]


HOSTILE = [
    Hostile,
    HostileCallable,
    raise_unprintable,
    raise_system_exit,
    recurse,
    raise_not_implemented,
    loop_forever,
    lambda x: Hostile(),
    lambda x: [1, [2, 3]],  # ragged: np.asarray raises
    lambda x: np.ones(3),  # == gives an array, whose truth value raises
    lambda x: x,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.complex_numbers()
    | st.text()
    | st.binary()
)
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5), children, max_size=4)
    | st.frozensets(st.integers() | st.text(max_size=5), max_size=4),
    max_leaves=12,
)
arrays = hnp.arrays(
    dtype=hnp.scalar_dtypes(),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
answers = (
    nested
    | arrays
    | st.from_type(object)
    | st.from_type(type).flatmap(st.from_type)
    | st.sampled_from(HOSTILE).map(lambda make: make() if isinstance(make, type) else make)
    | st.functions(like=lambda x: x, returns=nested)
)


@pytest.fixture
def memory_cap():
    """At most 2 GB more address space: an answer built from an arbitrary type can ask for terabytes
    (seen: bytearray of a huge int), which must become a MemoryError for check() to report,
    not a test process killed by the kernel's OOM killer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + 2 * 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=answers)
def test_check_never_raises_whatever_the_answer(demo, monkeypatch, memory_cap, answer):
    monkeypatch.setattr(checks, "TIME_LIMIT", 0.1)
    feedback = check(demo, answer)
    assert_valid(feedback)
    event(f"status {feedback.status}")


def lab_check_names():
    """Every check of every lab module (``labkit.checks.labNN``)."""
    labs = [m.name[3:] for m in pkgutil.iter_modules(checks.__path__) if m.name[:3] == "lab" and m.name[3:].isdigit()]
    return sorted(name for lab in labs for name in names(lab))


LAB_CHECKS = lab_check_names()


@pytest.mark.skipif(not LAB_CHECKS, reason="no lab checks yet")
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.sampled_from(LAB_CHECKS or ["none"]), answer=answers)
def test_lab_checks_never_raise_whatever_the_answer(monkeypatch, memory_cap, name, answer):
    monkeypatch.setattr(checks.CheckSpec, "seconds", property(lambda spec: 0.5))  # checks with their own limit too
    feedback = check(name, answer)
    assert_valid(feedback, name)
    assert feedback.status != "error", feedback.message


@settings(max_examples=200, deadline=None)
@given(name=st.text() | st.from_regex(r"\A[0-9]{1,3}\.[a-z_]{0,8}\Z"))
def test_check_never_raises_whatever_the_name(name):
    feedback = check(name, 42)
    assert isinstance(feedback, Feedback)
    assert feedback.status in STATUSES
    json.dumps(feedback.record())


@pytest.mark.parametrize(
    "answer, status, words",
    [
        (Hostile, "failed", "Boom"),
        (HostileCallable, "failed", "Boom"),
        (raise_unprintable, "failed", "UnprintableError"),
        (raise_system_exit, "failed", "SystemExit"),
        (recurse, "failed", "RecursionError"),
        (raise_not_implemented, "not_attempted", "NotImplementedError"),
        (..., "not_attempted", "..."),
        ([1, 2, 3], "passed", "Well done"),
        (lambda x: [x, x, x], "passed", "Well done"),
        ([1, 2], "failed", "Expected 3 values, got 2"),
    ],
    ids=["hostile", "hostile-callable", "unprintable-error", "SystemExit", "RecursionError",
         "NotImplementedError", "ellipsis", "right", "right-function", "wrong"],
)
def test_statuses(demo, answer, status, words):
    if isinstance(answer, type):
        answer = answer()
    feedback = check(demo, answer)
    assert_valid(feedback)
    assert feedback.status == status, feedback.message
    assert words in feedback.message


def test_exception_details_keep_a_traceback(demo):
    feedback = check(demo, Hostile())
    assert "Boom" in feedback.details["traceback"]


@pytest.mark.parametrize("answer", [loop_forever, sleep_forever, loop_swallowing_errors],
                         ids=["busy-loop", "sleep", "loop-catching-Exception"])
def test_endless_code_is_stopped(demo, monkeypatch, answer):
    monkeypatch.setattr(checks, "TIME_LIMIT", 0.3)
    start = time.monotonic()
    feedback = check(demo, answer)
    took = time.monotonic() - start
    assert_valid(feedback)
    assert feedback.status == "failed"
    assert "more than 0.3 s" in feedback.message
    assert took < 2
    # the alarm is disarmed afterwards: ordinary work is not interrupted later
    time.sleep(0.5)
    assert check(demo, [1, 2, 3]).passed


def test_a_check_can_set_its_own_time_limit(monkeypatch):
    """A check that starts a server gets longer than TIME_LIMIT, and says so when even that runs out."""

    @register("99.slow", time_limit=0.4)
    def slow_check(answer, rng):
        return f"answered {answer()}"

    try:
        monkeypatch.setattr(checks, "TIME_LIMIT", 0.1)
        assert check("99.slow", lambda: time.sleep(0.2) or "late").passed  # over TIME_LIMIT, under its own
        start = time.monotonic()
        feedback = check("99.slow", lambda: sleep_forever(0))
        assert feedback.status == "failed" and "more than 0.4 s" in feedback.message
        assert time.monotonic() - start < 2
    finally:
        REGISTRY.pop("99.slow", None)


def test_unknown_names_are_errors_that_list_the_lab(demo):
    feedback = check("99.nope", [1, 2, 3])
    assert feedback.status == "error" and not feedback
    assert "99.nope" in feedback.message and "99.demo" in feedback.message
    assert feedback.points == 0

    feedback = check("98.nothing", [1, 2, 3])
    assert feedback.status == "error"
    assert "none for this lab" in feedback.message

    assert check("no-dot-at-all").status == "error"
    assert "99.demo" in names("99")
    assert "99.demo" in names()
    assert names("98") == []


@pytest.mark.parametrize("name", ["9" * 3000 + ".x", "²³.x", "١٢.x", "𝟘.x", "", ".", "99.", "../99.demo",
                                  "99.demo\x00"],
                         ids=["long", "superscript-digits", "arabic-digits", "math-digits", "empty", "dot",
                              "no-slug", "path", "nul"])
def test_odd_names_are_errors(demo, name):
    feedback = check(name, [1, 2, 3])
    assert feedback.status == "error" and not feedback
    json.dumps(feedback.record())


@pytest.mark.parametrize("name", [None, 1, 99.5, ["99.demo"], b"99.demo", Hostile],
                         ids=["None", "int", "float", "list", "bytes", "hostile"])
def test_name_that_is_not_a_string(demo, name):
    if name is Hostile:
        name = Hostile()
    feedback = check(name, [1, 2, 3])
    assert isinstance(feedback, Feedback)
    assert feedback.status == "error" and not feedback
    assert "exercise name" in feedback.message


def test_points_and_bool(demo):
    right = check(demo, [1, 2, 3])
    assert right.status == "passed" and right.passed and bool(right) is True
    assert (right.points, right.max_points) == (2, 2)

    wrong = check(demo, [1, 2])
    assert wrong.status == "failed" and bool(wrong) is False
    assert (wrong.points, wrong.max_points) == (0, 2)

    todo = check(demo)
    assert todo.status == "not_attempted" and bool(todo) is False
    assert (todo.points, todo.max_points) == (0, 2)


def test_check_message_returned_by_the_check_function_is_shown(demo):
    feedback = check(demo, lambda x: x)
    assert feedback.passed
    assert feedback.message.startswith("You returned the hidden value")


def test_html_escapes_messages_and_hint(demo):
    wrong = check(demo, [1, 2])
    page = wrong._repr_html_()
    assert "&lt;values&gt; &amp; more" in page
    assert "<values>" not in page
    assert html.escape(HINT) in page and "<b>len</b>" not in page
    assert "Hint" in str(wrong) and HINT in str(wrong)

    right = check(demo, [1, 2, 3])
    assert "Hint" not in right._repr_html_(), "no hint once passed"
    assert "Hint" not in str(right)

    sneaky = Feedback("<script>x</script>", False, 0, 1, "<img src=x onerror=alert(1)>", "<i>", "failed")
    page = sneaky._repr_html_()
    assert "<script>" not in page and "<img" not in page and "<i>" not in page


def test_mimebundle_carries_a_json_record(demo):
    feedback = check(demo, [1, 2], seed=7)
    bundle = feedback._repr_mimebundle_()
    assert set(bundle) >= {"text/plain", "text/html", MIME_TYPE}
    record = json.loads(json.dumps(bundle[MIME_TYPE]))
    assert record == feedback.record()
    assert record["name"] == "99.demo"
    assert record["status"] == "failed" and record["passed"] is False
    assert record["points"] == 0 and record["max_points"] == 2
    assert record["details"]["seed"] == 7
    assert record["hint"] == HINT

    # a crash inside the student's code still gives a serialisable record, traceback included
    crashed = check(demo, Hostile())._repr_mimebundle_()[MIME_TYPE]
    assert "traceback" in json.loads(json.dumps(crashed))["details"]


def test_seed_is_recorded_and_reproduces_the_verdict(coin):
    verdicts = []
    for _ in range(40):
        first = check(coin, "anything")
        seed = first.details["seed"]
        assert isinstance(seed, int)
        again = check(coin, "anything", seed=seed)
        assert (again.status, again.message) == (first.status, first.message)
        assert again.details["seed"] == seed
        verdicts.append(first.status)
    assert {"passed", "failed"} <= set(verdicts), "seeds are drawn afresh on each call"


def test_not_attempted_raised_by_a_check(monkeypatch):
    @register("99.todo", points=1)
    def todo(answer, rng):
        raise NotAttempted("Fill in `threshold` first.")

    try:
        feedback = check("99.todo", 0.5)
        assert feedback.status == "not_attempted"
        assert feedback.message == "Fill in `threshold` first."
    finally:
        REGISTRY.pop("99.todo", None)


def test_answer_that_exhausts_memory_is_a_failed_check(demo, memory_cap):
    def hoard(x):
        chunks = []
        while True:
            chunks.append(bytearray(200 * 2**20))

    feedback = check(demo, hoard)
    assert_valid(feedback)
    assert feedback.status == "failed"
    assert "MemoryError" in feedback.message


def test_server_error_reason_names_the_cause_not_the_shutdown():
    from labkit.checks import server_error_reason

    log = ("Traceback (most recent call last):\n  File \"runtime.py\", line 41, in load\n"
           "FileNotFoundError: [Errno 2] No such file or directory: 'autoencoder.npz'\n"
           "INFO:     Shutting down\nasyncio.exceptions.CancelledError\n")
    assert server_error_reason(log) == "FileNotFoundError: [Errno 2] No such file or directory: 'autoencoder.npz'"
    assert server_error_reason("line 1\nline 2") == "line 1\nline 2"  # no exception: the last lines

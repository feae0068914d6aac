"""Lab 00's check: the solution passes on every seed, the mistakes students make fail on every seed."""

import pytest
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed

from labkit.checks import check


def error_rate(codes):  # the solution
    if not codes:
        return 0.0
    return sum(code >= 400 for code in codes) / len(codes)


def test_solution_passes():
    assert_passes_on_every_seed("00.error_rate", error_rate)


def test_a_generator_or_numpy_answer_passes_too():
    import numpy as np

    assert_passes_on_every_seed("00.error_rate", lambda codes: float(np.mean(np.array(codes) >= 400)) if codes
                                else 0.0, seeds=range(3))


MISTAKES = {
    "300 and above": lambda codes: sum(c >= 300 for c in codes) / len(codes) if codes else 0.0,
    "not 2xx": lambda codes: sum(not 200 <= c < 300 for c in codes) / len(codes) if codes else 0.0,
    "above 400": lambda codes: sum(c > 400 for c in codes) / len(codes) if codes else 0.0,
    "4xx only": lambda codes: sum(400 <= c < 500 for c in codes) / len(codes) if codes else 0.0,
    "500 and above": lambda codes: sum(c >= 500 for c in codes) / len(codes) if codes else 0.0,
    "up to 599 only": lambda codes: sum(400 <= c < 599 for c in codes) / len(codes) if codes else 0.0,
    "a percentage": lambda codes: 100 * error_rate(codes),
    "empty list not handled": lambda codes: sum(c >= 400 for c in codes) / len(codes),
    "empty list is 1": lambda codes: error_rate(codes) if codes else 1.0,
    "integer division": lambda codes: sum(c >= 400 for c in codes) // len(codes) if codes else 0,
    "a count, not a fraction": lambda codes: sum(c >= 400 for c in codes),
    "the successes' share": lambda codes: 1 - error_rate(codes) if codes else 0.0,
    "a string": lambda codes: f"{error_rate(codes):.0%}",
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("00.error_rate", MISTAKES[mistake])


def test_messages_say_what_to_fix():
    assert "percentage" in check("00.error_rate", MISTAKES["a percentage"], seed=0).message
    assert "ZeroDivisionError" in check("00.error_rate", MISTAKES["empty list not handled"], seed=0).message
    assert "error_rate([])" in check("00.error_rate", MISTAKES["empty list not handled"], seed=0).message


@pytest.mark.parametrize("answer", [None, 0.4, "error_rate", [200, 404]])
def test_odd_answers_fail(answer):
    assert check("00.error_rate", answer).status == "failed"


def test_placeholder_is_not_attempted():
    def placeholder(codes):
        raise NotImplementedError

    assert check("00.error_rate").status == "not_attempted"
    assert check("00.error_rate", placeholder).status == "not_attempted"

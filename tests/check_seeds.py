"""Run a check on many seeds: a right answer passes on every one, a wrong answer fails on every one.

One seed is one draw of hidden cases, so a wrong answer that fails on most seeds but not all would let the
grader's seed decide a grade; the per-lab tests (tests/test_checks_labNN.py) use these on at least 20 seeds.
"""

from labkit.checks import check

SEEDS = range(20)


def assert_passes_on_every_seed(name, answer, seeds=SEEDS):
    for seed in seeds:
        feedback = check(name, answer, seed=seed)
        assert feedback.status == "passed", f"seed {seed}: {feedback.message}"
        assert feedback.points == feedback.max_points


def assert_fails_on_every_seed(name, answer, words=None, seeds=SEEDS):
    """``words``: a part of the message that every failure must contain (what to fix); "a|b" accepts either,
    in any case."""
    messages = []
    for seed in seeds:
        feedback = check(name, answer, seed=seed)
        assert feedback.status == "failed", f"seed {seed} passed a wrong answer: {feedback.message}"
        assert feedback.points < feedback.max_points
        if words is not None:
            assert any(w.lower() in feedback.message.lower() for w in words.split("|")), \
                f"seed {seed}: {feedback.message}"
        messages.append(feedback.message)
    return messages

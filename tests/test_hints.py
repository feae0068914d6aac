"""On-demand, progressive hints: ``labkit.hint("06.ks_detector", 2)`` shows a hint without checking anything,
and records nothing (no check record for the grader, no progress in the sidebar)."""

import html
import json
import pkgutil
import re

import nbformat
import pytest
from IPython.core.formatters import DisplayFormatter

import labkit
import labkit.checks as checks
from labkit import course
from labkit.checks import MIME_TYPE, REGISTRY, Hint, check, hint, names


def every_check():
    labs = [m.name[3:] for m in pkgutil.iter_modules(checks.__path__) if m.name[:3] == "lab" and m.name[3:].isdigit()]
    return sorted(name for lab in labs for name in names(lab))


EVERY_CHECK = every_check()


def test_labkit_exports_hint_beside_check():
    assert labkit.hint is hint and labkit.check is check
    assert "hint" in labkit.__all__


@pytest.mark.parametrize("name", EVERY_CHECK)
def test_every_check_has_at_least_two_progressive_hints(name):
    hints = REGISTRY[name].hints
    assert len(hints) >= 2
    assert len(set(hints)) == len(hints) and all(len(h) > 40 for h in hints)
    shown = [hint(name, level) for level in range(1, len(hints) + 1)]
    assert [h.text for h in shown] == list(hints)
    assert [h.level for h in shown] == list(range(1, len(hints) + 1))
    assert f'labkit.hint("{name}", 2)' in str(hint(name))
    assert "last hint" in str(hint(name, len(hints)))


def solution_lines():
    """Lines of the solutions (between the markers) long enough to give an answer away."""
    lines = set()
    for path in course.solutions().glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, flags=re.S):
                lines |= {line.strip() for line in block.splitlines() if len(line.strip()) > 30}
    return lines


def test_no_hint_hands_out_a_line_of_a_solution():
    lines = solution_lines()
    assert len(lines) > 20
    for name in EVERY_CHECK:
        for text in REGISTRY[name].hints:
            assert not [line for line in lines if line in text], name


def test_a_failed_check_shows_the_first_hint_and_how_to_get_the_next():
    feedback = check("00.error_rate", lambda codes: 0.5, seed=0)
    assert feedback.status == "failed"
    assert feedback.hint.startswith(REGISTRY["00.error_rate"].hints[0])
    assert 'labkit.hint("00.error_rate", 2)' in feedback.hint
    assert html.escape('labkit.hint("00.error_rate", 2)') in feedback._repr_html_()


def test_levels_are_clamped_and_odd_levels_give_the_first():
    total = len(REGISTRY["06.ks_detector"].hints)
    assert hint("06.ks_detector", 99).level == total
    for level in [0, -3, "two", None, 1.9, 10**100]:
        assert 1 <= hint("06.ks_detector", level).level <= total


@pytest.mark.parametrize("name", ["06.nothing", "99.x", "", "9" * 3000 + ".x", None, 42, ["06.ks_detector"]])
def test_odd_names_never_raise(name):
    shown = hint(name)
    assert isinstance(shown, Hint) and shown.total == 0
    str(shown), shown._repr_html_()


def test_unknown_names_list_the_labs_exercises():
    assert "06.ks_detector" in str(hint("06.nothing"))


def test_a_hint_records_nothing(monkeypatch):
    def no_progress(*args, **kwargs):
        raise AssertionError("a hint must not record progress")

    monkeypatch.setattr(checks, "record_progress", no_progress)
    shown = hint("07.vae_score", 2)
    data, _ = DisplayFormatter().format(shown)
    assert MIME_TYPE not in data  # the grader reads check records from this MIME type: a hint leaves none
    assert set(data) == {"text/plain", "text/html"}
    assert "Hint 2 of 3" in data["text/html"] and "Hint 2 of 3" in data["text/plain"]


def test_a_hint_is_escaped_html():
    page = Hint("<b>x</b>", 1, 2, "a <script> & b")._repr_html_()
    assert "<script>" not in page and "&lt;script&gt; &amp; b" in page and "<b>x</b>" not in page


def test_partial_credit_is_recorded(monkeypatch):
    @checks.register("99.partial", points=4, hints=("one", "two"))
    def partial(answer, rng):
        raise checks.Fail("3 of 4 right", credit=0.75)

    try:
        feedback = check("99.partial", 1)
        record = json.loads(json.dumps(feedback.record()))
        assert (feedback.status, feedback.points, record["points"]) == ("failed", 3.0, 3.0)
        assert not feedback.passed
    finally:
        REGISTRY.pop("99.partial", None)

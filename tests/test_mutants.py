"""The checks, proven by mutation: every mutant of every solution fails its check, or is a listed equivalent.

tests/mutants.py makes and judges the mutants; this module runs it for each exercise, and tests the harness
itself (its operators, the stable ids, the namespace it builds) on small cases.
"""

import ast
import itertools
import re
import warnings

import pytest

import mutants
from labkit.checks import evaluate

# Judged on latency measured live (a real server under load): the figure, and near the limit the verdict, is the
# machine's, not the seed's, so neither its mutants nor its determinism can be judged by a verdict.
MEASURED = {"03.batching_slo"}
EXERCISES = [e for e in mutants.exercises() if e.kind == "function" and e.name not in MEASURED]
LISTED = mutants.equivalents()


@pytest.fixture(autouse=True)
def _scratch_folder(tmp_path, monkeypatch):
    """A mutant may write files (a model folder): in a scratch folder, never in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_every_mutant_fails_its_check_or_is_a_listed_equivalent(exercise):
    state = __import__(mutants.STATE_FROM[exercise.name]).state() if exercise.name in mutants.STATE_FROM else None
    names = mutants.namespace(exercise, state)
    assert evaluate(exercise.name, mutants.answer_of(exercise, exercise.source, names), seed=0).passed, \
        "the unmutated solution must pass, or its mutants prove nothing"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mutant's numerical warnings are noise here
        verdicts = mutants.judge(exercise, names)
    survivors = [f"{v.mutant} (passed seeds {v.passed_seeds})" for v in verdicts
                 if v.survived and (exercise.name, v.mutant) not in LISTED]
    assert survivors == [], (f"{exercise.name}: mutants that pass the check; add hidden cases that they fail, "
                             f"or list them in tests/equivalent_mutants.toml with the reason they are equivalent")
    surviving = {v.mutant for v in verdicts if v.survived}
    stale = [m for (name, m) in LISTED if name == exercise.name and m not in surviving]
    assert stale == [], f"{exercise.name}: listed as equivalent but killed now (or gone): remove them"


def _lab02_folder(source, path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from labkit.data import load_breast_cancer
    from test_checks_lab02 import model_folder

    data = load_breast_cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.X, data.y)
    return model_folder(path, model, data.target_names, strict_source=source)


def _lab05_folder(source, path):
    from test_checks_lab05 import runtime_folder

    return runtime_folder(path, source)


RUNTIME_FOLDERS = {"02.runtime": _lab02_folder, "05.runtime": _lab05_folder}
RUNTIMES = [e for e in mutants.exercises() if e.kind == "runtime"]


@pytest.mark.parametrize("exercise", RUNTIMES, ids=lambda e: e.name)
def test_every_runtime_mutant_fails_its_check_or_is_a_listed_equivalent(exercise):
    """A runtime's file is mutated as a function is, and served by its check (one seed: a server a mutant)."""
    verdicts = mutants.judge_runtime(exercise, RUNTIME_FOLDERS[exercise.name])
    survivors = [v.mutant for v in verdicts if v.survived and (exercise.name, v.mutant) not in LISTED]
    assert survivors == [], f"{exercise.name}: runtime mutants that pass the check"
    stale = [m for (name, m) in LISTED if name == exercise.name and m not in {v.mutant for v in verdicts
                                                                               if v.survived}]
    assert stale == [], f"{exercise.name}: listed but killed now (or gone): remove them"


def _verdict(feedback):
    """What must not change between two calls with one seed (times in a message may)."""
    return feedback.status, feedback.points, re.sub(r"\d+(\.\d+)? ?(s|ms)\b", "<time>", feedback.message)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_a_check_gives_the_same_verdict_twice_for_one_seed(exercise):
    """The notebook and the grader must agree on a submission: nothing in a check may be drawn afresh per
    call, neither for a right answer nor for a wrong one (here, the first mutants)."""
    state = __import__(mutants.STATE_FROM[exercise.name]).state() if exercise.name in mutants.STATE_FROM else None
    names = mutants.namespace(exercise, state)
    sources = [exercise.source] + [m.source for m in itertools.islice(mutants.mutants(exercise.source), 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in sources:
            try:
                answer = mutants.answer_of(exercise, source, names)
            except Exception:
                continue
            first, second = (evaluate(exercise.name, answer, seed=7) for _ in range(2))
            assert _verdict(first) == _verdict(second), (first.message, second.message)


def test_every_listed_equivalent_names_a_check_and_gives_a_reason():
    known = {e.name for e in mutants.exercises()}
    for (name, mutant), reason in LISTED.items():
        assert name in known and name not in MEASURED, name
        kind, _, why = reason.partition(": ")
        assert kind in mutants.KINDS, f"{name}: {mutant}: kind must be one of {mutants.KINDS}"
        assert len(why.split()) >= 4, f"{name}: {mutant}: say why it passes"


SOLUTION = '''def f(xs, limit=3):
    ### BEGIN SOLUTION
    kept = [x for x in xs if x < limit and x != 0]
    return max(kept) if kept else -1
    ### END SOLUTION
'''


def test_operators_cover_what_the_issue_names():
    ids = [m.id for m in mutants.mutants(SOLUTION)]
    for expected in ("Lt -> LtE", "Lt -> Gt", "NotEq -> Eq", "And -> Or", "max -> min", "condition negated",
                     "USub removed", "1 -> 2", "statement deleted", "argument limit ignored",
                     "conditional replaced by its else value"):
        assert any(i.startswith(expected) for i in ids), expected
    assert len(ids) == len(set(ids)), "ids must be unique"
    assert all("`" in i for i in ids), "an id names the line it changes"


def test_mutants_change_only_the_solution_and_each_one_thing():
    source = "LIMIT = 5\n" + SOLUTION
    for mutant in mutants.mutants(source):
        assert mutant.source.startswith("LIMIT = 5\n"), mutant.id
        changed = ast.dump(ast.parse(mutant.source)) != ast.dump(ast.parse(source))
        assert changed, mutant.id


def test_ids_are_stable_when_code_above_moves():
    first = [m.id for m in mutants.mutants(SOLUTION)]
    moved = [m.id for m in mutants.mutants("# a comment\n\n" + SOLUTION)]
    assert first == moved


def test_mutants_behave_as_named():
    by_id = {m.id.split(" in ")[0]: m for m in mutants.mutants(SOLUTION)}
    results = {}
    for key in ("Lt -> LtE", "max -> min", "argument limit ignored (its default 3 used)"):
        scope = {}
        exec(by_id[key].source, scope)
        results[key] = scope["f"]([1, 3, 5], limit=5)
    assert results == {"Lt -> LtE": 5, "max -> min": 1, "argument limit ignored (its default 3 used)": 1}


def test_every_exercise_is_found_and_gets_its_names_from_the_notebook():
    found = {e.name: e for e in mutants.exercises()}
    assert len(found) >= 37 and {"00.error_rate", "04.policy", "10.replicas"} <= set(found)
    assert found["02.runtime"].kind == "runtime" and found["04.policy"].kind == "function"
    drift = mutants.namespace(found["06.drift_type"])
    assert {"KSDetector", "performance_drift", "np"} <= set(drift), "earlier solutions it uses are defined"

"""Grade submissions (``labkit grade``) and let students grade their own notebook (``check_all()``).

One module per concern:

- ``lab``: a lab's exercises (from the solution's check cells), the options, a submission's ``Result``;
- ``kernel``: one kernel for one submission, driven over the bridge (``labkit.bridge``);
- ``notebook``: grading one submission in that kernel;
- ``sandbox``: the boxes (bubblewrap) that student code runs in;
- ``worker``: the process that grades one submission and sends its result over a pipe;
- ``batch``: many submissions, workers, rows written as they come, resume, shards and merge;
- ``reports``: grades.csv, feedback, summary;
- ``student``: ``check_all()``.

Generating student notebooks is ``labkit.assign``; its names stay importable from here.
"""

from labkit.assign import (
    BEGIN, END, NOTEBOOK_NAME, PLACEHOLDER_COMMENT, AssignError, AssignResult, assign, strip_solutions,
    student_notebook,
)
from labkit.grading.batch import Submission, find_submissions, grade, in_shard, merge, parse_shard
from labkit.grading.kernel import MARKER, KernelDied, Missing, end_processes
from labkit.grading.lab import STATUSES, Exercise, Lab, Options, Result, _check_seconds, exercises, without_checks
from labkit.grading.notebook import _confine, grade_notebook
from labkit.grading.reports import feedback_html, read_results, write_reports
from labkit.grading.sandbox import SandboxUnavailable
from labkit.grading.student import check_all

__all__ = [
    "AssignError", "AssignResult", "BEGIN", "END", "Exercise", "KernelDied", "Lab", "MARKER", "Missing",
    "NOTEBOOK_NAME", "Options", "PLACEHOLDER_COMMENT", "Result", "STATUSES", "SandboxUnavailable", "Submission",
    "_check_seconds", "_confine", "assign", "check_all", "end_processes", "exercises", "feedback_html",
    "find_submissions", "grade", "grade_notebook", "in_shard", "merge", "parse_shard", "read_results",
    "strip_solutions", "student_notebook", "without_checks", "write_reports",
]

"""Checks of lab 02, "Your own runtime"."""

import json
import math
import re
from importlib.metadata import version as installed_version

import httpx
import numpy as np
from mlserver.codecs import PandasCodec
from mlserver.settings import ModelSettings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from pydantic import ValidationError

from labkit.checks import (
    Fail, NotAttempted, call, expect_function, json_roundtrip, model_folder_repository, number, read_model_folder,
    register, safe_repr, serve_for_check,
)
from labkit.checks.artefact import serve_artefact
from labkit.client import Client, InferenceServerError, validation_message
from labkit.data import load_breast_cancer

RUNTIME = "diagnosis_runtime.DiagnosisModel"
PLACEHOLDER = 'raise NotImplementedError("Replace this line with your code")'
BAD_REQUEST = {"rest": 400, "grpc": "INVALID_ARGUMENT"}


@register(
    "02.settings",
    points=2,
    title="model-settings.json for the diagnosis runtime",
    hints=(
        "Start from the settings of diagnosis v1 above and replace everything that depends on the arguments: "
        "name, version, class names and number of features.",
        "The version goes in parameters.version and the class names, in order, in parameters.extra.class_names; "
        "the number of classes sets the shape of 'probabilities', [-1, number of classes].",
        "'label' is BYTES with shape [-1, 1] and parameters {'content_type': 'str'}, so that clients decode "
        "strings; the input is FP64 with shape [-1, n_features].",
    ),
)
def settings(answer, rng):
    expect_function(answer, "make_settings", "a name, a version, a list of class names and a number of features")
    # the lab's two classes, in their unsorted order, and 3 to 5 classes: each on every call
    counts = [2, *rng.permutation([3, 4, 5]), int(rng.integers(2, 6))]
    for case, n_classes in enumerate(counts):
        name = f"{rng.choice(['triage', 'churn', 'fraud', 'iris', 'wine'])}-{int(rng.integers(1, 99))}"
        version = f"v{int(rng.integers(1, 20))}"
        class_names = ["malignant", "benign"] if case == 0 else [
            f"{rng.choice(['low', 'mid', 'high', 'a', 'b', 'c'])}{i}" for i in range(n_classes)]
        n_features = int(rng.integers(2, 60))
        shown = f"make_settings({name!r}, {version!r}, {class_names!r}, {n_features})"
        got = call(answer, shown, name, version, list(class_names), n_features)
        if not isinstance(got, dict):
            raise Fail(f"{shown} returned {safe_repr(got)}; return a dict, the content of model-settings.json.")
        got = json_roundtrip(got, f"The result of {shown}")
        try:
            parsed = ModelSettings.model_validate(dict(got))
        except ValidationError as e:
            raise Fail(f"MLServer rejects the settings of {shown}: {validation_message(e)}") from None
        if parsed.name != name:
            raise Fail(f"{shown} names the model {parsed.name!r}; clients will call it {name!r}.")
        if got.get("implementation") != RUNTIME:
            raise Fail(f"The implementation should be the runtime class as module.Class: {RUNTIME!r}.")
        parameters = parsed.parameters
        if parameters is None or parameters.uri != "./model.joblib":
            raise Fail(f"{shown}: parameters.uri should point to the artefact next to the settings, './model.joblib'.")
        if parameters.version != version:
            raise Fail(f"{shown}: the version goes in parameters.version, here {version!r}.")
        if (parameters.extra or {}).get("class_names") != class_names:
            raise Fail(f"{shown}: the runtime reads the class names from parameters.extra.class_names, in order.")
        inputs = parsed.inputs or []
        if len(inputs) != 1 or inputs[0].datatype != "FP64" or list(inputs[0].shape) != [-1, n_features]:
            raise Fail(f"{shown} should declare one input: FP64 rows of {n_features} features, shape "
                       f"[-1, {n_features}].")
        outputs = {o.name: o for o in parsed.outputs or []}
        if set(outputs) != {"label", "probabilities"}:
            raise Fail(f"{shown} declares the outputs {sorted(outputs)}; the runtime returns 'label' and "
                       "'probabilities'.")
        label, proba = outputs["label"], outputs["probabilities"]
        label_type = label.parameters.content_type if label.parameters else None
        if label.datatype != "BYTES" or list(label.shape) != [-1, 1] or label_type != "str":
            raise Fail("'label' holds one class name per row: datatype BYTES, shape [-1, 1] and content type "
                       f"'str' so that clients decode strings (got {label.datatype}, {label.shape}, {label_type}).")
        if proba.datatype != "FP64" or list(proba.shape) != [-1, len(class_names)]:
            raise Fail(f"'probabilities' holds one probability per class and row: FP64 with shape "
                       f"[-1, {len(class_names)}] for {len(class_names)} classes "
                       f"(got {proba.datatype}, {proba.shape}).")
    return "MLServer accepts your settings for 5 hidden models, with their versions, class names and tensors."


# -- the strict runtime ------------------------------------------------------------------------------


def _good_requests(X, max_rows, rng):
    """(what, protocol, rows, payload) of the good requests, in a random order: the fewest rows (1) and the most
    (max_rows), DataFrames with their columns shuffled over both protocols, and a plain JSON tensor without a
    content type, as curl sends it."""

    def rows(n):
        picked = X.iloc[rng.integers(len(X), size=n)]
        return picked * rng.normal(1, 0.03, size=picked.shape)

    one, most, shuffled, also_shuffled, plain = rows(1), rows(max_rows), *(rows(int(rng.integers(2, 9))) for _ in "123")
    requests = [
        ("1 row", "rest", one, one.to_numpy()),
        (f"{max_rows} rows, max_rows", "grpc", most, most.to_numpy()),
        (f"a DataFrame of {len(shuffled)} rows, columns in another order", "rest", shuffled,
         shuffled[list(rng.permutation(shuffled.columns))]),
        (f"a DataFrame of {len(also_shuffled)} rows, columns in another order", "grpc", also_shuffled,
         also_shuffled[list(rng.permutation(also_shuffled.columns))]),
        (f"a JSON tensor of {len(plain)} rows without a content type", "rest", plain,
         {"inputs": [{"name": "features", "shape": list(plain.shape), "datatype": "FP64",
                      "data": plain.to_numpy().ravel().tolist()}]}),
    ]
    return [requests[i] for i in rng.permutation(len(requests))]


def _bad_requests(frame, max_rows, rng):
    """(what, protocol, payload, None or (a pattern the reason must hold, what it stands for)) of every kind of
    request a strict runtime must refuse, in a random order, with random details; ``frame`` holds a few good rows
    with the model's columns. Every kind is sent on every call, so that a runtime that misses one fails whatever
    the seed."""

    def tensor(values, shape, datatype="FP64"):
        return {"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": values}]}

    rows = frame.to_numpy()
    n_rows, n_cols = rows.shape
    wrong_cols = int(rng.choice([c for c in range(2, 2 * n_cols) if c != n_cols]))
    with_nan = rows.copy()
    # not row 0, and in a column whose number no row has: a reason that names the row is told from one that names
    # the column, or row 0 whatever the data
    bad_row = int(rng.integers(1, n_rows))
    with_nan[bad_row, rng.integers(n_rows + 2, n_cols)] = rng.choice([np.nan, np.inf, -np.inf])
    dropped, added = str(frame.columns[rng.integers(n_cols)]), f"extra_{int(rng.integers(100))}"
    missing, extra = frame.drop(columns=dropped), frame.assign(**{added: 1.0})
    ragged = rows.tolist()
    ragged[int(rng.integers(n_rows))].pop()
    short = json.loads(PandasCodec.encode_request(frame).model_dump_json(exclude_none=True))
    column = short["inputs"][int(rng.integers(n_cols))]
    column["shape"] = [n_rows + int(rng.integers(1, 9)), 1]
    oversized = int(max_rows + rng.integers(1, 20))
    shapes = [[-1, n_cols], [-n_rows, n_cols], [n_rows, -1], [n_rows, -n_cols]]
    negative = [shapes[i] for i in rng.choice(len(shapes), size=2, replace=False)]
    other_2d = [rows.T.tolist(), [rows.ravel().tolist()], rows.ravel()[:, None].tolist(),
                rows.reshape(n_cols, n_rows).tolist()][int(rng.integers(4))]
    three_d = [rows[:, :, None].tolist(), rows[:, None, :].tolist(), rows[None].tolist()][int(rng.integers(3))]
    candidates = [
        (f"{wrong_cols} columns instead of {n_cols}", "rest",
         tensor(rng.normal(size=n_rows * wrong_cols).tolist(), [n_rows, wrong_cols])),
        (f"{wrong_cols} columns instead of {n_cols}", "grpc", rng.normal(size=(n_rows, wrong_cols))),
        # JSON has no NaN or infinity: clients send null (pydantic does), which decodes to NaN
        ("a NaN or infinite value", "rest",
         tensor([v if np.isfinite(v) else None for v in with_nan.ravel().tolist()], [n_rows, n_cols]),
         # counted from 0 or from 1
         (rf"(?<!\d)({bad_row}|{bad_row + 1})(?!\d)", f"the row (number {bad_row}, or {bad_row + 1} counted from 1)")),
        ("strings instead of numbers", "rest", tensor(["x"] * (n_rows * n_cols), [n_rows, n_cols], "BYTES")),
        ("fractions declared as INT8", "rest", tensor(rows.ravel().tolist(), [n_rows, n_cols], "INT8")),
        ("an empty batch", "rest", tensor([], [0, n_cols])),
        ("an empty batch", "grpc", rows[:0]),
        (f"{oversized} rows, more than max_rows ({max_rows})", "rest",
         tensor([0.5] * (oversized * n_cols), [oversized, n_cols])),
        ("a one-dimensional tensor", "rest", tensor(rows[0].tolist(), [n_cols])),
        ("a three-dimensional tensor", "grpc", np.stack([rows, rows], axis=-1)),
        ("a DataFrame with a missing column", "rest", missing, (re.escape(dropped), f"the column {dropped!r}")),
        ("a DataFrame with an extra column", "grpc", extra, (re.escape(added), f"the column {added!r}")),
        ("a declared shape larger than the data", "rest", tensor(rows.ravel().tolist(), [n_rows + 7, n_cols])),
        # numpy's reshape takes any negative size as "guess it", so each of these decodes to the rows themselves
        ("a negative size in the shape", "rest", tensor(rows.ravel().tolist(), negative[0])),
        ("a negative size in the shape", "grpc", tensor(rows.ravel().tolist(), negative[1])),
        # the codec reshapes np.array(data): nested otherwise than the shape, the values land in other features
        ("data nested as another 2-D shape", "rest", tensor(other_2d, [n_rows, n_cols])),
        ("data nested in 3 dimensions for a 2-D shape", "rest", tensor(three_d, [n_rows, n_cols])),
        ("rows of different lengths", "rest", tensor(ragged, [n_rows, n_cols])),
        ("text in an FP64 tensor", "rest", tensor([str(rng.choice(["x", "big", "n/a"]))] * (n_rows * n_cols),
                                                   [n_rows, n_cols])),
        (f"a DataFrame whose column {column['name']!r} declares more rows than it holds", "rest", short),
    ]
    return [(*c, None) if len(c) == 3 else c for c in (candidates[i] for i in rng.permutation(len(candidates)))]


def _read_folder(answer):
    folder, settings = read_model_folder(answer)
    try:
        extra = settings["parameters"]["extra"]
        class_names = list(extra["class_names"])
        max_rows = int(extra.get("max_rows", 1000))
        module = str(settings["implementation"]).rpartition(".")[0]
        name = str(settings.get("name") or folder.name)
    except (ValueError, KeyError, TypeError) as e:
        raise Fail(f"The model-settings.json in {answer!r} lacks what the runtime needs ({safe_repr(e)}).") from None
    source = folder / f"{module}.py"
    if not source.is_file():
        raise Fail(f"The runtime module {module}.py is not in the model folder; copy it there.")
    if PLACEHOLDER in source.read_text(errors="replace"):
        raise NotAttempted("Your runtime still raises NotImplementedError: write _features, run its cell, "
                           "the cell that builds the model folder, then this one.")
    return folder, name, class_names, max_rows


@register(
    "02.runtime",
    points=4,
    title="A runtime that refuses bad requests with a 400",
    hints=(
        "A bad request is the client's mistake: answer it with a 400 (INVALID_ARGUMENT over gRPC) and a message "
        "that says what to send, never a 500 or a prediction.",
        "Decode first (catching the codec's errors), then check the shape or the columns, the batch size, and "
        "finite values; raise InferenceError with a message that says what to send instead.",
        "The check sends every kind of bad request on every call: wrong number of columns, NaN or infinity, "
        "strings, an INT8 declaration, an empty batch, more than max_rows rows, 1-D and 3-D tensors, a "
        "DataFrame with a missing or an extra column, a shape larger than the data, a negative size in the shape, "
        "data nested otherwise than the shape (compare numpy.shape(tensor.data.root) with tensor.shape), rows of "
        "different lengths, text in an FP64 tensor, and a DataFrame column holding fewer values than its shape. "
        "Good ones include 1 row, max_rows rows, shuffled DataFrame columns and JSON without a content type.",
    ),
    time_limit=30,  # it starts an MLServer, 3 s on a quiet laptop, far more on a busy one
)
def runtime(answer, rng):
    folder, name, class_names, max_rows = _read_folder(answer)
    X = load_breast_cancer().X
    repository = model_folder_repository(folder)
    # The model itself is loaded in the check's server, never here: a pickle runs code when it is loaded.
    artefact = serve_artefact(repository, folder / "model.joblib")
    with serve_for_check(repository, timeout=9) as server:
        clients = {}
        try:
            clients = {"rest": Client(server, "rest", timeout=5), "grpc": Client(server, "grpc", timeout=5)}
            _expect_breast_cancer_model(clients["rest"], artefact, X)
            for what, protocol, rows, payload in _good_requests(X, max_rows, rng):
                try:
                    served = clients[protocol].predict(name, payload)
                except InferenceServerError as e:
                    raise Fail(f"A good request ({what}) over {protocol} was refused with {e.status}: "
                               f"{e.reason[:300]}") from None
                expected = _predict_proba(clients["rest"], artefact, rows.to_numpy())
                labels = [class_names[k] for k in expected.argmax(axis=1)]
                if [str(x) for x in np.ravel(served.get("label", []))] != labels:
                    raise Fail(f"For a good request of {len(rows)} rows, 'label' is not the class names of the "
                               "model's most probable classes.")
                got = np.asarray(served.get("probabilities", []), dtype=float)
                if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-6):
                    raise Fail(f"For a good request of {len(rows)} rows, 'probabilities' differ from the model's "
                               "predict_proba.")
            refusals, wrong = [], []
            bad = _bad_requests(X.iloc[:3], max_rows, rng)
            for what, protocol, payload, named in bad:
                try:
                    _infer_once_more_on_reset(clients, server, protocol, name, payload)
                except InferenceServerError as e:
                    if e.status != BAD_REQUEST[protocol] or not str(e.reason).strip():
                        wrong.append(f"a request with {what} (over {protocol}) got {e.status}: {e.reason[:200]}")
                    elif named and not re.search(named[0], e.reason):
                        wrong.append(f"a request with {what} (over {protocol}) was refused, but the reason does not "
                                     f"say which: {named[1]}: {e.reason[:200]}")
                    else:
                        refusals.append(e.reason)
                except httpx.TransportError as e:
                    wrong.append(f"a request with {what} (over {protocol}) broke the connection ({e})")
                else:
                    wrong.append(f"a request with {what} (over {protocol}) was answered")
            # on a fresh connection: after a 500 (an exception out of the app) uvicorn closes the pooled one
            with Client(server, "rest", timeout=5) as fresh:
                serving = fresh.live() and fresh.model_ready(name)
        finally:
            for client in clients.values():
                client.close()
    if not serving:
        raise Fail("After the bad requests the server no longer serves your model.")
    if wrong:
        more = f"; and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        raise Fail(f"{len(refusals)} of {len(bad)} bad requests refused with {BAD_REQUEST['rest']} (REST) or "
                   f"{BAD_REQUEST['grpc']} (gRPC) and a reason; not these: {'; '.join(wrong[:5])}{more}. Refuse "
                   "each with an InferenceError that says what was wrong.", credit=len(refusals) / len(bad))
    return (f"4 hidden good requests answered correctly over REST and gRPC, all {len(refusals)} kinds of bad "
            f"requests refused with 400 and a reason (such as: {refusals[0][:120]!r}), and the server kept serving.")


def _expect_breast_cancer_model(client, artefact, X):
    """A ``Fail`` unless the folder's model.joblib is a model trained on the breast cancer DataFrame."""
    try:
        columns = [str(c) for c in np.ravel(client.predict(artefact, X.to_numpy()[:1])["columns"])]
    except InferenceServerError as e:
        raise Fail(f"Cannot load model.joblib from the folder as a model trained on a DataFrame: "
                   f"{e.reason[:300]}") from None
    if columns != list(X.columns):
        raise Fail("The model in the folder was not trained on the breast cancer columns.")


def _predict_proba(client, artefact, rows):
    """The folder's model's ``predict_proba`` on ``rows``, computed in the check's server."""
    try:
        return np.asarray(client.predict(artefact, rows)["predict_proba"], dtype=float)
    except (InferenceServerError, KeyError) as e:
        raise Fail(f"The model in the folder could not predict {len(rows)} rows of the data ({safe_repr(e)}).") \
            from None


def _infer_once_more_on_reset(clients, server, protocol, name, payload):
    """``infer``, sent again on a fresh connection if the pooled one was reset: uvicorn may close an idle
    keep-alive connection just as the next request goes out (seen on a busy machine); that is no verdict."""
    try:
        return clients[protocol].infer(name, payload)
    except httpx.TransportError:
        if protocol != "rest":
            raise
        clients["rest"].close()
        clients["rest"] = Client(server, "rest", timeout=5)
        return clients["rest"].infer(name, payload)


# -- custom metrics -----------------------------------------------------------------------------------


MODELS, VERSIONS = ("diagnosis", "diagnosis-2", "cancer"), ("v1", "v10", "v2")
# The two histograms the lab's DiagnosisModel logs (labs/runtimes/diagnosis_runtime.py), each beside a _max
# look-alike
METRICS = ("diagnosis_rows", "diagnosis_rows_max", "diagnosis_watched_rows", "diagnosis_watched_rows_max")
# (metric, model, version) asked for, each next to look-alikes: v1 beside v10, diagnosis beside diagnosis-2,
# a metric beside its _max; the last has no observations (v3)
METRIC_CASES = [("diagnosis_watched_rows", "diagnosis", "v10"), ("diagnosis_rows", "diagnosis", "v1"),
                ("diagnosis_watched_rows", "diagnosis-2", "v2"), ("diagnosis_rows", "cancer", "v3")]


@register(
    "02.metric_mean",
    points=2,
    title="The mean of a custom metric, from the metrics endpoint",
    hints=(
        "A histogram publishes, per set of labels, a _count (how many observations) and a _sum (their total); "
        "the mean is the one over the other.",
        "prometheus_client.parser.text_string_to_metric_families parses the text; keep the family whose name is "
        "the metric (not one whose name only starts with it), and the samples whose labels model_name and "
        "model_version are exactly the ones asked for.",
        "If no sample has those labels, that model version has no observations: return None.",
    ),
)
def metric_mean(answer, rng):
    expect_function(answer, "metric_mean", "the metrics text, a metric name, a model name and a version")
    for metric_name, model, version in [METRIC_CASES[i] for i in rng.permutation(len(METRIC_CASES))]:
        registry = CollectorRegistry()
        metrics = {name: Histogram(name, "a custom metric", ["model_name", "model_version"], registry=registry)
                   for name in METRICS}
        truth = {}
        # Row counts per request, as the runtime logs them; every series gets counts of its own scale, in a
        # random order, and a mean no other series has.
        series = [(m, mo, v) for m in METRICS for mo in MODELS for v in VERSIONS]
        for i in rng.permutation(len(series)):
            key = series[i]
            values = rng.integers(1, 50, size=int(rng.integers(1, 6))) * (1 + i)
            while float(values.mean()) in truth.values():
                values = rng.integers(1, 50, size=len(values)) * (1 + i)
            for value in values:
                metrics[key[0]].labels(model_name=key[1], model_version=key[2]).observe(int(value))
            truth[key] = float(values.mean())
        text = generate_latest(registry).decode()
        expected = truth.get((metric_name, model, version))
        shown = f"metric_mean(text, {metric_name!r}, {model!r}, {version!r})"
        got = call(answer, shown, text, metric_name, model, version)
        if expected is None:
            if got is not None:
                raise Fail(f"{shown} returned {safe_repr(got)}, but that model version has no observations; "
                           "return None then.")
            continue
        value = number(got, f"The result of {shown}")
        if not math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12):
            raise Fail(f"{shown} returned {value:g}; expected the mean of that model version's observations "
                       "(its _sum divided by its _count), not of another metric, model or version.")
    return "Right means for 4 hidden metrics texts, other models, versions and look-alike metrics ignored."


# -- packaging ------------------------------------------------------------------------------------------

PACKAGES = ["mlserver", "mlserver-sklearn", "scikit-learn", "joblib", "pandas", "numpy", "scipy", "threadpoolctl"]


def _spelling(name, rng):
    """The same distribution as people write it: Scikit_Learn, scikit-learn, SCIKIT.LEARN."""
    separator = str(rng.choice(["-", "_", "."]))
    name = name.replace("-", separator)
    return [name, name.upper(), name.title()][int(rng.integers(3))]


@register(
    "02.requirements",
    points=2,
    title="requirements.txt with exact pins",
    hints=(
        "An image must run what you tested: pin each package to exactly the version installed here, one "
        "'name==version' line per package.",
        "importlib.metadata.version(name) gives the installed version, whatever the spelling of the name "
        "(Scikit_Learn, scikit-learn).",
        "For a package that is not installed, version() raises PackageNotFoundError: let it raise (or raise your "
        "own error naming the package) rather than skip it, so that a broken image is never built.",
    ),
)
def requirements(answer, rng):
    expect_function(answer, "make_requirements", "a list of package names")
    for _ in range(3):
        chosen = [str(p) for p in rng.choice(PACKAGES, size=int(rng.integers(2, 6)), replace=False)]
        asked = [_spelling(p, rng) for p in chosen]
        shown = f"make_requirements({asked!r})"
        got = call(answer, shown, list(asked))
        if not isinstance(got, str):
            raise Fail(f"{shown} returned {safe_repr(got)}; return the text of requirements.txt (a string).")
        pins = {}
        for line in got.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                raise Fail(f"{shown}: pip cannot read the line {line!r}.") from None
            pins[canonicalize_name(requirement.name)] = requirement
        wanted = {canonicalize_name(p) for p in chosen}
        if set(pins) != wanted:
            raise Fail(f"{shown} should pin exactly the {len(wanted)} packages asked for, one per line "
                       f"(got {sorted(pins)}).")
        for name, requirement in pins.items():
            specifiers = list(requirement.specifier)
            exact = installed_version(name)
            if len(specifiers) != 1 or specifiers[0].operator != "==" or specifiers[0].version != exact:
                raise Fail(f"{shown}: {name} should be pinned with == to the version installed here, so that the "
                           f"image runs what you tested (got {str(requirement)!r}).")
    missing = f"no-such-package-{int(rng.integers(10**6))}"
    try:
        answer([missing])
    except Exception as e:
        if missing not in str(e):
            raise Fail(f"make_requirements([{missing!r}]) raised an error that does not name the package: "
                       f"{safe_repr(str(e))}") from None
    else:
        raise Fail(f"make_requirements([{missing!r}]) returned; a package that is not installed should raise an "
                   "error naming it, so that a broken image is not built.")
    return "Exact pins of the installed versions for 3 hidden package lists, whatever their spelling; a clear error "\
           "for a package that is not installed."

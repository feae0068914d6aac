"""Checks of lab 01, "Serve a model"."""

import json

import numpy as np
from mlserver import types
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelSettings
from pydantic import ValidationError

from labkit.checks import Fail, call, expect_function, json_roundtrip, register, safe_repr
from labkit.client import validation_message
from labkit.data import load_breast_cancer

SKLEARN_RUNTIME = "mlserver_sklearn.SKLearnModel"


@register(
    "01.model_settings",
    points=2,
    title="model-settings.json for a scikit-learn model",
    hints=(
        "Start from the settings written for the cancer model above and replace what depends on the arguments: "
        "the name, the number of features and the URI.",
        "The input is one FP64 tensor of shape [-1, n_features]: -1 lets a request carry any number of rows. "
        "The output 'predict' holds one INT64 class index per row.",
        "The implementation is MLServer's scikit-learn runtime, 'mlserver_sklearn.SKLearnModel', and the "
        "artefact's path goes in parameters.uri; MLServer's ModelSettings must accept the dict.",
    ),
)
def model_settings(answer, rng):
    expect_function(answer, "make_model_settings", "a name, a number of features and a URI")
    for n_features in rng.permutation([30, *rng.integers(2, 60, size=5)]):  # the lab's 30 and five others
        name = f"{rng.choice(['iris', 'churn', 'fraud', 'wine', 'credit'])}-{int(rng.integers(1, 99))}"
        n_features = int(n_features)
        uri = f"./{rng.choice(['model', 'clf', 'pipeline'])}-{int(rng.integers(1, 9))}.joblib"
        shown = f"make_model_settings({name!r}, {n_features}, {uri!r})"
        got = call(answer, shown, name, n_features, uri)
        if not isinstance(got, dict):
            raise Fail(f"{shown} returned {safe_repr(got)}; return a dict, the content of model-settings.json.")
        settings = json_roundtrip(got, f"The result of {shown}")
        try:
            parsed = ModelSettings.model_validate(settings)
        except ValidationError as e:
            raise Fail(f"MLServer rejects the settings of {shown}: {validation_message(e)}") from None
        if parsed.name != name:
            raise Fail(f"{shown} names the model {parsed.name!r}; clients will call it {name!r}.")
        if settings.get("implementation") != SKLEARN_RUNTIME:
            raise Fail(f"The implementation should be MLServer's scikit-learn runtime, {SKLEARN_RUNTIME!r}.")
        if parsed.parameters is None or parsed.parameters.uri != uri:
            raise Fail(f"{shown}: parameters.uri should be the artefact's path, {uri!r}.")
        inputs = parsed.inputs or []
        if len(inputs) != 1:
            raise Fail(f"{shown} declares {len(inputs)} inputs; declare one tensor that holds all the features.")
        tensor = inputs[0]
        if tensor.datatype != "FP64" or list(tensor.shape) != [-1, n_features]:
            raise Fail(f"{shown} declares the input as {tensor.datatype} with shape {tensor.shape}; a batch of "
                       f"rows of {n_features} float64 features is FP64 with shape [-1, {n_features}].")
        outputs = {o.name: o for o in parsed.outputs or []}
        if "predict" not in outputs:
            raise Fail(f"{shown} should declare the runtime's default output, 'predict'.")
        predict = outputs["predict"]
        if predict.datatype != "INT64" or list(predict.shape or []) not in ([-1], [-1, 1]):
            raise Fail(f"'predict' returns one INT64 class index per row: datatype INT64 and shape [-1, 1] "
                       f"(got {predict.datatype}, {predict.shape}).")
    return "MLServer accepts your settings for 6 hidden models, with the right inputs and outputs."


@register(
    "01.request",
    points=2,
    title="A V2 inference request by hand",
    hints=(
        "A V2 request body is a dict with a list 'inputs'; the scikit-learn runtime reads one tensor, with a "
        "name, a shape, a datatype and the data.",
        "The shape is the array's own: [rows, columns], whatever the number of rows; float64 values are FP64.",
        "Send the values in row-major order, unrounded: rows.ravel().tolist() (or rows.tolist()).",
    ),
)
def request(answer, rng):
    expect_function(answer, "make_request", "a 2-D array of rows")
    for n_rows in [1, *rng.integers(2, 12, size=4)]:
        rows = rng.normal(0, 10, size=(int(n_rows), 30)).round(int(rng.integers(1, 6)))
        shown = f"make_request(<{rows.shape[0]}×{rows.shape[1]} array>)"
        got = call(answer, shown, rows.copy())
        if not isinstance(got, dict):
            raise Fail(f"{shown} returned {safe_repr(got)}; return the request body as a dict.")
        body = json_roundtrip(got, f"The body from {shown}")
        try:
            parsed = types.InferenceRequest.model_validate(body)
        except ValidationError as e:
            raise Fail(f"This is not a valid V2 inference request: {validation_message(e)}") from None
        if len(parsed.inputs) != 1:
            raise Fail(f"{shown} has {len(parsed.inputs)} inputs; the scikit-learn runtime reads one tensor.")
        tensor = parsed.inputs[0]
        if tensor.datatype != "FP64":
            raise Fail(f"The datatype is {tensor.datatype}; the rows are float64, which is FP64 in V2.")
        if list(tensor.shape) != list(rows.shape):
            raise Fail(f"For {rows.shape[0]} rows of 30 features the shape should be {list(rows.shape)}, "
                       f"not {tensor.shape}.")
        try:
            decoded = NumpyCodec.decode_input(tensor)
        except Exception as e:
            raise Fail(f"MLServer cannot decode the data: {e}") from None
        if not np.array_equal(decoded.reshape(rows.shape), rows):
            raise Fail(f"The data of {shown} does not decode to the rows sent: keep them in row-major order "
                       "and do not round them.")
    return "Valid V2 requests that decode to exactly the rows, for 5 hidden batches."


@register(
    "01.decode",
    points=2,
    title="Class names from a V2 response",
    hints=(
        "A V2 response has a list 'outputs', one dict per output tensor; the class indices are in one of them.",
        "Find the output named 'predict' by its name: outputs can come in any order, so outputs[0] may be "
        "'predict_proba'.",
        "Map each index in that output's 'data' to a name with target_names[index], and return the list of "
        "names, one per row.",
    ),
)
def decode(answer, rng):
    expect_function(answer, "decode_classes", "a response dict")
    names = load_breast_cancer().target_names
    for case, n in enumerate(rng.permutation([1, *rng.integers(2, 10, size=4)])):  # one row, and several
        n = int(n)
        classes = rng.integers(0, len(names), size=n)
        proba = rng.dirichlet(np.ones(len(names)), size=n)
        outputs = [
            {"name": "predict", "shape": [n, 1], "datatype": "INT64", "data": classes.tolist()},
            {"name": "predict_proba", "shape": [n, len(names)], "datatype": "FP64", "data": proba.ravel().tolist()},
        ]
        if case % 2:
            outputs.reverse()
        response = {"model_name": "cancer", "id": f"req-{int(rng.integers(1e6))}", "parameters": {},
                    "outputs": outputs}
        got = call(answer, f"decode_classes(<a response of {n} rows>)", json.loads(json.dumps(response)))
        try:
            got = [str(x) for x in got]
        except TypeError:
            raise Fail(f"decode_classes returned {safe_repr(got)}; return a list of class names.") from None
        expected = [names[c] for c in classes]
        if got != expected:
            order = " (here 'predict' was not the first output)" if case % 2 else ""
            raise Fail(f"For a response with {n} rows{order} you returned {safe_repr(got)}, "
                       f"expected {len(expected)} names such as {expected[0]!r}.")
    return "Right class names for 5 hidden responses, whatever the order of the outputs."

"""Lab 01's checks: the solutions pass on every seed, the mistakes students make fail on every seed."""

import numpy as np
import pytest
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed

from labkit.checks import check
from labkit.data import load_breast_cancer

TARGET_NAMES = list(load_breast_cancer().target_names)


# -- the solutions, as in labs/solutions/01_serve_a_model.ipynb ------------------------------------------------
def make_model_settings(name, n_features, uri):
    return {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": uri},
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, n_features]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    }


def make_request(rows):
    return {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.ravel().tolist()}]}


def decode_classes(response):
    predict = next(output for output in response["outputs"] if output["name"] == "predict")
    return [TARGET_NAMES[index] for index in predict["data"]]


SOLUTIONS = {"01.model_settings": make_model_settings, "01.request": make_request, "01.decode": decode_classes}


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solutions_pass_on_every_seed(name):
    assert_passes_on_every_seed(name, SOLUTIONS[name])


def test_nested_data_is_a_valid_request_too():
    def nested(rows):
        return {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}]}

    assert_passes_on_every_seed("01.request", nested, seeds=range(3))


# -- mistakes ---------------------------------------------------------------------------------------------------
def settings_with(**changes):
    def make(name, n_features, uri):
        settings = make_model_settings(name, n_features, uri)
        for key, value in changes.items():
            value = value(name, n_features, uri) if callable(value) else value
            if key == "input":
                settings["inputs"][0].update(value)
            elif key == "uri":
                settings["parameters"]["uri"] = value
            else:
                settings[key] = value
        return settings

    return make


SETTINGS_MISTAKES = {
    "the lab's 30 features": (settings_with(input={"shape": [-1, 30]}), "shape"),
    "a one-row shape": (settings_with(input=lambda name, n, uri: {"shape": [1, n]}), "shape"),
    "a flat shape": (settings_with(input=lambda name, n, uri: {"shape": [n]}), "shape"),
    "float32 features": (settings_with(input={"datatype": "FP32"}), "FP64"),
    "the lab's model name": (settings_with(name="cancer"), "names the model"),
    "the lab's artefact": (settings_with(uri="./model.joblib"), "parameters.uri"),
    "the runtime's module only": (settings_with(implementation="mlserver_sklearn"), "implementation"),
    "no outputs": (settings_with(outputs=[]), "'predict'"),
    "predict shaped like the input": (settings_with(outputs=lambda name, n, uri: [
        {"name": "predict", "datatype": "INT64", "shape": [-1, n]}]), "'predict'"),
    "predict as floats": (settings_with(outputs=[{"name": "predict", "datatype": "FP64", "shape": [-1, 1]}]),
                          "'predict'"),
}


@pytest.mark.parametrize("mistake", SETTINGS_MISTAKES)
def test_model_settings_mistakes_fail_on_every_seed(mistake):
    answer, words = SETTINGS_MISTAKES[mistake]
    assert_fails_on_every_seed("01.model_settings", answer, words)


def request_with(shape=None, datatype="FP64", data=None):
    def make(rows):
        return {"inputs": [{"name": "features", "shape": shape(rows) if shape else list(rows.shape),
                            "datatype": datatype, "data": data(rows) if data else rows.ravel().tolist()}]}

    return make


REQUEST_MISTAKES = {
    "one row's shape": (request_with(shape=lambda rows: [1, 30]), "shape"),
    "a flat shape": (request_with(shape=lambda rows: [rows.size]), "shape"),
    "columns first": (request_with(shape=lambda rows: list(rows.shape)[::-1],
                                   data=lambda rows: rows.T.ravel().tolist()), "shape"),
    "column-major data": (request_with(data=lambda rows: rows.ravel(order="F").tolist()), "row-major"),
    "rounded values": (request_with(data=lambda rows: rows.round(1).ravel().tolist()), "do not round"),
    "float32": (request_with(datatype="FP32"), "FP64"),
    "a numpy array as data": (request_with(data=lambda rows: rows.ravel()), "JSON"),
    "one input per column": (lambda rows: {"inputs": [
        {"name": f"f{j}", "shape": [len(rows), 1], "datatype": "FP64", "data": rows[:, j].tolist()}
        for j in range(rows.shape[1])]}, "inputs"),
}


@pytest.mark.parametrize("mistake", REQUEST_MISTAKES)
def test_request_mistakes_fail_on_every_seed(mistake):
    answer, words = REQUEST_MISTAKES[mistake]
    assert_fails_on_every_seed("01.request", answer, words)


def first_output(response):
    return [TARGET_NAMES[index] for index in response["outputs"][0]["data"]]


def most_probable(response):
    proba = next(o for o in response["outputs"] if o["name"] == "predict_proba")
    return [TARGET_NAMES[i] for i in np.reshape(proba["data"], proba["shape"]).argmax(axis=1)]


DECODE_MISTAKES = {
    "the first output": first_output,
    "argmax of predict_proba": most_probable,
    "the names swapped": lambda response: [TARGET_NAMES[1 - n] for n in decode_classes_indices(response)],
    "the indices, not names": lambda response: decode_classes_indices(response),
    "only the first row": lambda response: decode_classes(response)[:1],
}


def decode_classes_indices(response):
    return next(o for o in response["outputs"] if o["name"] == "predict")["data"]


@pytest.mark.parametrize("mistake", DECODE_MISTAKES)
def test_decode_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("01.decode", DECODE_MISTAKES[mistake])


def test_messages_name_the_call_that_raised():
    feedback = check("01.decode", first_output, seed=0)
    assert feedback.status == "failed"
    assert "decode_classes(" in feedback.message or "'predict' was not the first" in feedback.message


@pytest.mark.parametrize("name", SOLUTIONS)
@pytest.mark.parametrize("answer", [None, 3, "text", {"inputs": []}, lambda *a: None, lambda *a: 1 / 0])
def test_odd_answers_fail(name, answer):
    assert check(name, answer).status == "failed"


@pytest.mark.parametrize("name", SOLUTIONS)
def test_placeholders_are_not_attempted(name):
    def placeholder(*args):
        raise NotImplementedError

    assert check(name).status == "not_attempted"
    assert check(name, placeholder).status == "not_attempted"

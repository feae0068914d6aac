"""Checks of lab 10: the solutions pass, typical mistakes fail on every seed, odd answers never raise."""

import copy
import math

import numpy as np
import pytest
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed
from skl2onnx import to_onnx
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit import platforms
from labkit.checks import check
from labkit.checks.lab10 import quantity


# -- the solutions, as in labs/solutions/10_beyond_one_laptop.ipynb ----------------------------------------------
def kserve_manifest(settings, storage_uri, cpu, memory_mb):
    memory = f"{memory_mb}Mi"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": settings["name"]},
        "spec": {"predictor": {"model": {
            "modelFormat": {"name": platforms.FORMATS[settings["implementation"]]},
            "runtime": "kserve-mlserver",
            "protocolVersion": "v2",
            "storageUri": storage_uri,
            "resources": {"requests": {"cpu": str(cpu), "memory": memory}, "limits": {"memory": memory}},
        }}},
    }


def replicas_for(rate, p99_target, service_times, max_utilisation):
    mu = 1 / np.mean(service_times)
    per_replica = mu - math.log(100) / p99_target
    if per_replica <= 0:
        return None
    return max(1, math.ceil(rate / per_replica), math.ceil(rate / (max_utilisation * mu)))


def seldon_canary(current, candidate, percent):
    def model(folder):
        requirement = platforms.model_format(folder["settings"]) or "mlserver"
        return {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Model",
                "metadata": {"name": folder["settings"]["name"]},
                "spec": {"storageUri": folder["storage_uri"], "requirements": [requirement],
                         "memory": f"{folder['memory_mb']}Mi"}}

    default, new = current["settings"]["name"], candidate["settings"]["name"]
    experiment = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment",
                  "metadata": {"name": f"{default}-canary"},
                  "spec": {"default": default, "candidates": [{"name": default, "weight": 100 - percent},
                                                              {"name": new, "weight": percent}]}}
    return [model(current), model(candidate), experiment]


MODEL = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))  # the lab's model, as in the notebook


def export_onnx(X, y):
    fitted = clone(MODEL).fit(X, y)
    return to_onnx(fitted, X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString()


def pick_variant(variants, reference, max_bytes, max_extra_errors):
    allowed = variants[reference]["errors"] + max_extra_errors
    fitting = [(v["bytes"], v["errors"], label) for label, v in variants.items()
               if v["bytes"] <= max_bytes and v["errors"] <= allowed]
    return min(fitting)[2] if fitting else None


SOLUTIONS = {"10.kserve_manifest": kserve_manifest, "10.replicas": replicas_for, "10.seldon_canary": seldon_canary,
             "10.onnx_export": export_onnx, "10.edge_choice": pick_variant}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_solutions_pass_on_every_seed(name):
    assert_passes_on_every_seed(name, SOLUTIONS[name])


def test_other_right_spellings_pass():
    def millicores_and_gibibytes(settings, storage_uri, cpu, memory_mb):
        manifest = kserve_manifest(settings, storage_uri, cpu, memory_mb)
        resources = manifest["spec"]["predictor"]["model"]["resources"]
        resources["requests"] = {"cpu": f"{int(cpu * 1000)}m", "memory": f"{memory_mb / 1024}Gi"}
        resources["limits"] = {"cpu": str(cpu), "memory": memory_mb * 2**20}
        manifest["spec"]["predictor"].update(minReplicas=1, maxReplicas=3, scaleMetric="rps", scaleTarget=40)
        return manifest

    assert_passes_on_every_seed("10.kserve_manifest", millicores_and_gibibytes)


@pytest.mark.parametrize("name", SOLUTIONS)
def test_placeholders_are_not_attempted(name):
    assert check(name).status == "not_attempted"

    def placeholder(*args):
        raise NotImplementedError

    assert check(name, placeholder).status == "not_attempted"


@pytest.mark.parametrize("name", SOLUTIONS)
@pytest.mark.parametrize("answer", [None, 42, "yaml", [], {}, lambda *a: None, lambda *a: "x", lambda *a: [1, 2],
                                    lambda *a: {"apiVersion": 3}, lambda *a: float("nan"), lambda *a: 1 / 0])
def test_odd_answers_fail_without_raising(name, answer):
    feedback = check(name, answer, seed=0)
    assert feedback.status == "failed", feedback.message


# -- exercise 1 ----------------------------------------------------------------------------------------------------
def edited(change):
    def answer(settings, storage_uri, cpu, memory_mb):
        manifest = kserve_manifest(settings, storage_uri, cpu, memory_mb)
        change(manifest, settings, storage_uri, cpu, memory_mb)
        return manifest
    return answer


def model_of(manifest):
    return manifest["spec"]["predictor"]["model"]


def always_sklearn(m, *_):
    model_of(m)["modelFormat"] = {"name": "sklearn"}


def format_from_module(m, settings, *_):
    model_of(m)["modelFormat"] = {"name": settings["implementation"].split(".")[0]}


def megabytes(m, s, u, cpu, memory_mb):
    model_of(m)["resources"]["requests"]["memory"] = model_of(m)["resources"]["limits"]["memory"] = f"{memory_mb}MB"


def decimal_mega(m, s, u, cpu, memory_mb):
    model_of(m)["resources"]["requests"]["memory"] = model_of(m)["resources"]["limits"]["memory"] = f"{memory_mb}M"


def no_limit(m, *_):
    del model_of(m)["resources"]["limits"]


def cpu_in_millis_wrongly(m, s, u, cpu, memory_mb):
    model_of(m)["resources"]["requests"]["cpu"] = f"{cpu}m"


def cpu_as_a_number(m, s, u, cpu, memory_mb):
    model_of(m)["resources"]["requests"]["cpu"] = cpu  # 0.5 is neither an integer nor a string


def typo(m, *_):
    model_of(m)["storageURI"] = model_of(m).pop("storageUri")


def no_protocol(m, *_):
    del model_of(m)["protocolVersion"]


def no_runtime(m, *_):
    del model_of(m)["runtime"]


def file_not_folder(m, s, storage_uri, *_):
    model_of(m)["storageUri"] = storage_uri + "/model.joblib"


def resources_on_the_predictor(m, *_):
    m["spec"]["predictor"]["resources"] = model_of(m).pop("resources")


def old_form(m, settings, *_):
    model = m["spec"]["predictor"].pop("model")
    m["spec"]["predictor"][platforms.FORMATS[settings["implementation"]]] = {
        "storageUri": model["storageUri"], "protocolVersion": "v2", "resources": model["resources"]}


def alpha_api(m, *_):
    m["apiVersion"] = "serving.kserve.io/v1alpha1"


def name_of_the_file(m, settings, *_):
    m["metadata"]["name"] = "model"


def replicas_as_text(m, *_):
    m["spec"]["predictor"]["minReplicas"] = "1"


def latency_metric(m, *_):
    m["spec"]["predictor"]["scaleMetric"] = "latency"


@pytest.mark.parametrize("mistake, words", [
    (always_sklearn, "modelFormat"), (format_from_module, "modelFormat"), (megabytes, "does not match"),
    (decimal_mega, "Mi is 2^20"), (no_limit, "limits.memory is missing"), (cpu_in_millis_wrongly, "cpu"),
    (cpu_as_a_number, "is not valid under any of the given schemas"),
    (typo, "'storageURI' was unexpected"), (no_protocol, "protocolVersion"), (no_runtime, "runtime"),
    (file_not_folder, "storageUri"), (resources_on_the_predictor, "requests.cpu"), (old_form, None),
    (alpha_api, "no schema"), (name_of_the_file, "metadata.name"), (replicas_as_text, "is not of type"),
    (latency_metric, "is not one of"),
])
def test_manifest_mistakes_fail_on_every_seed(mistake, words):
    assert_fails_on_every_seed("10.kserve_manifest", edited(mistake), words)


def test_the_validator_quotes_the_schema():
    manifest = kserve_manifest({"name": "cancer", "implementation": "mlserver_sklearn.SKLearnModel"}, "s3://m/c",
                               1, 512)
    assert platforms.validate(manifest) == []
    bad = copy.deepcopy(manifest)
    model_of(bad)["resources"]["limits"]["memory"] = "512MB"
    model_of(bad)["storageURI"] = "s3://m/c"
    assert platforms.validate(bad, strict=False) == [
        "$.spec.predictor.model.resources.limits.memory: '512MB' does not match "
        "'^(\\\\+|-)?(([0-9]+(\\\\.[0-9]*)?)|(\\\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\\\+|-)?(([0-9]+"
        "(\\\\.[0-9]*)?)|(\\\\.[0-9]+))))?$'"]
    assert "$.spec.predictor.model: Additional properties are not allowed ('storageURI' was unexpected)" in \
        platforms.validate(bad)


def test_seldon_and_jupyterhub_schemas():
    model = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Model", "metadata": {"name": "cancer"},
             "spec": {"storageUri": "s3://m/c", "requirements": ["sklearn"], "memory": "512Mi", "replicas": 2}}
    assert platforms.validate(model) == []
    del model["spec"]["storageUri"]
    assert platforms.validate(model) == ["$.spec: 'storageUri' is a required property"]
    experiment = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "canary"},
                  "spec": {"default": "a", "candidates": [{"name": "a", "weight": 90}, {"name": "b", "weight": 10}]}}
    assert platforms.validate(experiment) == []
    values = {"singleuser": {"cpu": {"limit": 2, "guarantee": 0.5}, "memory": {"limit": "2G", "guarantee": "1G"}}}
    assert platforms.validate_z2jh_values(values) == []
    assert platforms.validate_z2jh_values({"singleuser": {"memory": {"limits": "2G"}}}) == [
        "$.singleuser.memory: Additional properties are not allowed ('limits' was unexpected)"]


def test_quantities():
    assert quantity("512Mi") == 512 * 2**20 and quantity("500m") == 0.5 and quantity(2) == 2
    assert quantity("1.5Gi") == 1.5 * 2**30 and quantity("1e3") is None and quantity("12MB") is None
    assert quantity(True) is None
    assert quantity("512M") == 512 * 10**6  # Kubernetes: M is decimal


def test_kubespawner_reads_m_as_mebibytes():
    # JupyterHub's ByteSpecification (jupyterhub/traitlets.py): K, M, G, T in powers of 1024, "Mi" refused
    assert platforms.kubespawner_bytes("512M") == 512 * 2**20 and platforms.kubespawner_bytes("1.5G") == 1.5 * 2**30
    assert platforms.kubespawner_bytes(1000) == 1000
    for bad in ["512Mi", "512MB", "M", "lots"]:
        with pytest.raises(ValueError):
            platforms.kubespawner_bytes(bad)


def test_seldon_capabilities_send_python_to_both_servers():
    mlserver, triton = platforms.SELDON_CAPABILITIES["mlserver"], platforms.SELDON_CAPABILITIES["triton"]
    assert mlserver & triton == {"python"} and set(platforms.FORMATS.values()) <= mlserver - triton


# -- exercise 2 ----------------------------------------------------------------------------------------------------
def median_service_time(rate, target, samples, cap):
    return replicas_for(rate, target, [np.median(samples)], cap)


def utilisation_only(rate, target, samples, cap):
    return max(1, math.ceil(rate * np.mean(samples) / cap))


def latency_only(rate, target, samples, cap):
    return replicas_for(rate, target, samples, 1.0)


def full_utilisation(rate, target, samples, cap):
    return max(1, math.ceil(rate * np.mean(samples)))


def mean_not_p99(rate, target, samples, cap):
    mu = 1 / np.mean(samples)
    if mu <= 1 / target:
        return None
    return max(1, math.ceil(rate / (mu - 1 / target)), math.ceil(rate / (cap * mu)))


def rounded(rate, target, samples, cap):
    mu = 1 / np.mean(samples)
    if mu <= math.log(100) / target:
        return None
    return max(1, round(max(rate / (mu - math.log(100) / target), rate / (cap * mu))))


def floored(rate, target, samples, cap):
    answer = replicas_for(rate, target, samples, cap)
    return None if answer is None else max(1, answer - 1)


def never_none(rate, target, samples, cap):
    answer = replicas_for(rate, target, samples, cap)
    return 1000 if answer is None else answer


def zero_when_impossible(rate, target, samples, cap):
    answer = replicas_for(rate, target, samples, cap)
    return 0 if answer is None else answer


def one_spare(rate, target, samples, cap):
    answer = replicas_for(rate, target, samples, cap)
    return None if answer is None else answer + 1


def p99_of_samples(rate, target, samples, cap):
    # the p99 of the service times is not the p99 of the response times under load
    mu = 1 / np.mean(samples)
    if np.percentile(samples, 99) > target:
        return None
    return max(1, math.ceil(rate / (cap * mu)))


@pytest.mark.parametrize("mistake", [median_service_time, utilisation_only, latency_only, full_utilisation,
                                     mean_not_p99, rounded, floored, never_none, zero_when_impossible, one_spare,
                                     p99_of_samples])
def test_replica_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("10.replicas", mistake)


def test_replicas_as_float_pass():
    assert_passes_on_every_seed("10.replicas", lambda *a: None if (n := replicas_for(*a)) is None else float(n))


def test_replicas_boundaries_with_other_spellings_pass():
    """np.log(100) is one unit in the last place below math.log(100); a loop instead of the closed form; the
    mean as sum / len. At the boundaries the check holds exactly, these still pass."""
    def spelled_differently(rate, target, samples, cap):
        mu = len(samples) / sum(samples)
        if np.log(100) / mu >= target:
            return None
        n = max(1, math.ceil(rate * (1 / mu) / cap))
        while np.log(100) / (mu - rate / n) > target:
            n += 1
        return n

    assert_passes_on_every_seed("10.replicas", spelled_differently)


def strict_cap(rate, target, samples, cap):
    # "below the cap" instead of "at most": one replica too many when the utilisation lands exactly on it
    mu = 1 / np.mean(samples)
    per = mu - math.log(100) / target
    if per <= 0:
        return None
    return max(1, math.floor(rate / per) + 1, math.floor(rate / (cap * mu)) + 1)


def zero_without_traffic(rate, target, samples, cap):
    answer = replicas_for(rate, target, samples, cap)
    return 0 if rate == 0 else answer


def nearly_p99(rate, target, samples, cap):
    # ln(101) or ln(99): a p99 a little off moves the count only near the boundaries
    mu = 1 / np.mean(samples)
    per = mu - math.log(99) / target
    if per <= 0:
        return None
    return max(1, math.ceil(rate / per), math.ceil(rate / (cap * mu)))


def none_below_one_request(rate, target, samples, cap):
    # "impossible" as soon as a replica may take less than one request per second: it is only expensive
    mu = 1 / np.mean(samples)
    per = mu - math.log(100) / target
    if per <= 1:
        return None
    return max(1, math.ceil(rate / per), math.ceil(rate / (cap * mu)))


@pytest.mark.parametrize("mistake", [strict_cap, zero_without_traffic, nearly_p99, none_below_one_request])
def test_replica_boundary_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("10.replicas", mistake)


def format_from_name(m, settings, *_):
    # the hidden names once carried the format; they must not
    model_of(m)["modelFormat"] = {"name": settings["name"].split("-")[-2] if settings["name"].count("-") > 1
                                  else "sklearn"}


def test_format_from_the_name_fails_on_every_seed():
    assert_fails_on_every_seed("10.kserve_manifest", edited(format_from_name), "modelFormat")


# -- exercise 3 ----------------------------------------------------------------------------------------------------
def seldon_edited(change):
    def answer(current, candidate, percent):
        documents = seldon_canary(current, candidate, percent)
        change(documents, current, candidate, percent)
        return documents
    return answer


def python_for_custom(d, current, candidate, percent):
    for m in d[:2]:
        if m["spec"]["requirements"] == ["mlserver"]:
            m["spec"]["requirements"] = ["python"]


def always_sklearn_requirement(d, *_):
    for m in d[:2]:
        m["spec"]["requirements"] = ["sklearn"]


def no_requirements(d, *_):
    for m in d[:2]:
        del m["spec"]["requirements"]


def custom_as_its_module(d, current, candidate, percent):
    for m, folder in zip(d[:2], (current, candidate), strict=True):
        if platforms.model_format(folder["settings"]) is None:
            m["spec"]["requirements"] = [folder["settings"]["implementation"].split(".")[0]]


def seldon_megabytes(d, current, candidate, percent):
    for m, folder in zip(d[:2], (current, candidate), strict=True):
        m["spec"]["memory"] = f"{folder['memory_mb']}M"


def seldon_no_memory(d, *_):
    for m in d[:2]:
        del m["spec"]["memory"]


def seldon_file_not_folder(d, current, *_):
    d[0]["spec"]["storageUri"] += "/model.joblib"


def weights_swapped(d, current, candidate, percent):
    d[2]["spec"]["candidates"] = [{"name": current["settings"]["name"], "weight": percent},
                                  {"name": candidate["settings"]["name"], "weight": 100 - percent}]


def weights_as_fractions(d, current, candidate, percent):
    for c in d[2]["spec"]["candidates"]:
        c["weight"] = c["weight"] / 100


def weight_added_to_100(d, current, candidate, percent):
    d[2]["spec"]["candidates"][0]["weight"] = 100  # 100 and percent: the candidate gets percent / (100 + percent)


def default_is_the_candidate(d, current, candidate, percent):
    d[2]["spec"]["default"] = candidate["settings"]["name"]


def only_the_candidate(d, current, candidate, percent):
    d[2]["spec"]["candidates"] = [{"name": candidate["settings"]["name"], "weight": percent}]


def mirror_not_split(d, current, candidate, percent):
    d[2]["spec"]["candidates"] = [{"name": current["settings"]["name"], "weight": 100}]
    d[2]["spec"]["mirror"] = {"name": candidate["settings"]["name"], "percent": percent}


def weight_as_text(d, *_):
    d[2]["spec"]["candidates"][1]["weight"] = f"{d[2]['spec']['candidates'][1]['weight']}%"


def underscore_name(d, current, *_):
    d[2]["metadata"]["name"] = current["settings"]["name"] + "_canary"


def no_experiment(d, *_):
    del d[2]


def one_name_for_both(d, current, *_):
    d[1]["metadata"]["name"] = current["settings"]["name"]


def model_typo(d, *_):
    d[0]["spec"]["storageURI"] = d[0]["spec"].pop("storageUri")


@pytest.mark.parametrize("mistake, words", [
    (python_for_custom, "Triton"), (always_sklearn_requirement, "requires"), (no_requirements, "no requirements"),
    (custom_as_its_module, "does not offer"), (seldon_megabytes, "Mi is 2^20"), (seldon_no_memory, "no memory"),
    (seldon_file_not_folder, "storageUri"), (weights_swapped, "of the traffic"),
    (weights_as_fractions, "is not of type 'integer'"), (weight_added_to_100, "of the traffic"),
    (default_is_the_candidate, "default"), (only_the_candidate, "candidates"), (mirror_not_split, "candidates"),
    (weight_as_text, "is not of type"), (underscore_name, "not a Kubernetes name"), (no_experiment, "three"),
    (one_name_for_both, "named"), (model_typo, "'storageURI' was unexpected"),
])
def test_seldon_mistakes_fail_on_every_seed(mistake, words):
    assert_fails_on_every_seed("10.seldon_canary", seldon_edited(mistake), words)


def test_other_right_canaries_pass():
    def doubled_weights_and_mlserver(current, candidate, percent):
        documents = seldon_canary(current, candidate, percent)
        for c in documents[2]["spec"]["candidates"]:
            c["weight"] *= 2  # only the ratio counts
        for m, folder in zip(documents[:2], (current, candidate), strict=True):
            m["spec"]["requirements"] = ["mlserver"] + ([] if platforms.model_format(folder["settings"]) is None
                                                        else [platforms.model_format(folder["settings"])])
            m["spec"]["memory"] = folder["memory_mb"] * 2**20  # bytes, as an integer
            m["spec"]["replicas"] = 2
        return documents[::-1]  # any order

    assert_passes_on_every_seed("10.seldon_canary", doubled_weights_and_mlserver)


# -- exercise 4 ----------------------------------------------------------------------------------------------------
def with_zipmap(X, y):
    return to_onnx(clone(MODEL).fit(X, y), X[:1].astype(np.float32)).SerializeToString()


def float64_input(X, y):
    return to_onnx(clone(MODEL).fit(X, y), X[:1], options={"zipmap": False}).SerializeToString()


def fixed_batch(X, y):
    from skl2onnx.common.data_types import FloatTensorType

    return to_onnx(clone(MODEL).fit(X, y), initial_types=[("X", FloatTensorType([1, X.shape[1]]))],
                   options={"zipmap": False}).SerializeToString()


def without_the_scaler(X, y):
    fitted = clone(MODEL).fit(X, y)
    return to_onnx(fitted[-1], X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString()


def another_model(X, y):
    fitted = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(X, y)
    return to_onnx(fitted, X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString()


def the_lab_model_not_refitted(X, y):
    from labkit.data import load_breast_cancer

    data = load_breast_cancer()
    fitted = clone(MODEL).fit(data.X.values[:, : X.shape[1]], data.y.values)
    return to_onnx(fitted, X[:1].astype(np.float32), options={"zipmap": False}).SerializeToString()


def model_proto(X, y):
    return to_onnx(clone(MODEL).fit(X, y), X[:1].astype(np.float32), options={"zipmap": False})


def not_onnx(X, y):
    return b"\x08\x07not an onnx file"


@pytest.mark.parametrize("mistake, words", [
    (with_zipmap, "zipmap"), (float64_input, "float32"), (fixed_batch, "[None,"), (without_the_scaler, "differs"),
    (another_model, "differs"), (the_lab_model_not_refitted, "differs|labels"), (model_proto, "SerializeToString"),
    (not_onnx, "cannot load"),
])
def test_onnx_mistakes_fail_on_every_seed(mistake, words):
    assert_fails_on_every_seed("10.onnx_export", mistake, words)


# -- exercise 5 ----------------------------------------------------------------------------------------------------
def smaller_than_budget(variants, reference, max_bytes, extra):
    return pick_variant(variants, reference, max_bytes - 1, extra)


def fewer_than_allowed(variants, reference, max_bytes, extra):
    return pick_variant(variants, reference, max_bytes, extra - 1)


def absolute_errors(variants, reference, max_bytes, extra):
    fitting = [(v["bytes"], v["errors"], k) for k, v in variants.items()
               if v["bytes"] <= max_bytes and v["errors"] <= extra]
    return min(fitting)[2] if fitting else None


def first_of_the_smallest(variants, reference, max_bytes, extra):
    allowed = variants[reference]["errors"] + extra
    fitting = [k for k, v in variants.items() if v["bytes"] <= max_bytes and v["errors"] <= allowed]
    return min(fitting, key=lambda k: variants[k]["bytes"]) if fitting else None


def last_of_the_smallest(variants, reference, max_bytes, extra):
    allowed = variants[reference]["errors"] + extra
    fitting = [k for k, v in variants.items() if v["bytes"] <= max_bytes and v["errors"] <= allowed][::-1]
    return min(fitting, key=lambda k: variants[k]["bytes"]) if fitting else None


def most_accurate(variants, reference, max_bytes, extra):
    allowed = variants[reference]["errors"] + extra
    fitting = [(v["errors"], v["bytes"], k) for k, v in variants.items()
               if v["bytes"] <= max_bytes and v["errors"] <= allowed]
    return min(fitting)[2] if fitting else None


def never_the_reference(variants, reference, max_bytes, extra):
    return pick_variant({k: v for k, v in variants.items() if k != reference} | {reference: {"bytes": 2**62,
                        "errors": variants[reference]["errors"]}}, reference, max_bytes, extra)


def smallest_whatever(variants, reference, max_bytes, extra):
    return min(variants, key=lambda k: variants[k]["bytes"])


def reference_when_none(variants, reference, max_bytes, extra):
    return pick_variant(variants, reference, max_bytes, extra) or reference


@pytest.mark.parametrize("mistake", [smaller_than_budget, fewer_than_allowed, absolute_errors, first_of_the_smallest,
                                     last_of_the_smallest, most_accurate, never_the_reference, smallest_whatever,
                                     reference_when_none])
def test_edge_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("10.edge_choice", mistake)

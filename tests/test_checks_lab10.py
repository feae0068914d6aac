"""Checks of lab 10: the solutions pass, typical mistakes fail on every seed, odd answers never raise."""

import copy
import math

import numpy as np
import pytest
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed

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


SOLUTIONS = {"10.kserve_manifest": kserve_manifest, "10.replicas": replicas_for}


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

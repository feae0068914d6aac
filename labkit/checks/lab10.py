"""Checks of lab 10, "Beyond one laptop"."""

from __future__ import annotations

import math
import re
import string

import numpy as np

from labkit import platforms
from labkit.checks import Fail, call, expect_function, json_roundtrip, number, register, safe_repr

RUNTIME = "kserve-mlserver"  # KServe's ServingRuntime that runs MLServer
# Kubernetes quantities: a number and a suffix (binary Ki..Ei, decimal k..E, or milli/micro/nano)
_SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           **{f"{p}i": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")}}
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([a-zA-Z]*)$")


def quantity(value) -> float | None:
    """A Kubernetes quantity (``"512Mi"``, ``"500m"``, ``2``) as a number, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        return None
    return float(match.group(1)) * _SUFFIX[match.group(2)]


# -- exercise 1 -------------------------------------------------------------------------------------------------
def _hidden_folder(rng, implementation, cpu):
    """A model folder as the manifest needs it: its settings, where its files are stored, and its budget."""
    stem = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(4, 9))))
    name = f"{stem}-{platforms.FORMATS[implementation]}-{int(rng.integers(1, 99))}"
    settings = {"name": name, "implementation": implementation, "parameters": {"uri": "./model.joblib",
                                                                                "version": f"v{rng.integers(1, 9)}"}}
    bucket = rng.choice(["s3://models", "gs://ml-artefacts", "pvc://model-store"])
    storage_uri = f"{bucket}/{name}/{settings['parameters']['version']}"
    memory_mb = int(rng.integers(200, 4000))
    return settings, storage_uri, cpu, memory_mb


def _get(document, *path):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


@register(
    "10.kserve_manifest",
    points=2,
    title="A KServe InferenceService for a model folder",
    hints=(
        "The manifest must pass the CRD's schema first (the message quotes the validator), then say what to run: "
        "the model's format, the runtime that serves it with MLServer, the V2 protocol, where its files are and "
        "what it may use.",
        "Everything goes under spec.predictor.model: modelFormat.name comes from the settings' implementation "
        "(labkit.platforms.FORMATS maps MLServer's runtimes to formats), runtime is KServe's MLServer runtime, "
        "protocolVersion is the Open Inference Protocol's, storageUri is the folder as given.",
        "resources.requests holds cpu and memory, resources.limits the same memory; memory in mebibytes is "
        "f\"{memory_mb}Mi\" (Mi, not M or MB).",
    ),
)
def kserve_manifest(answer, rng):
    expect_function(answer, "kserve_manifest", "settings, storage_uri, cpu and memory_mb")
    # every format and every kind of cpu figure (whole and fractional cores) on every call
    for implementation, cpu in zip(rng.permutation(sorted(platforms.FORMATS)), rng.permutation([0.25, 0.5, 1, 2]),
                                   strict=True):
        settings, uri, cpu, memory_mb = _hidden_folder(rng, str(implementation), float(cpu))
        shown = f"kserve_manifest(<settings of {settings['name']}>, {uri!r}, {cpu:g}, {memory_mb})"
        manifest = json_roundtrip(call(answer, shown, json_roundtrip(settings, "settings"), uri, cpu, memory_mb),
                                  f"what {shown} returned")
        errors = platforms.validate(manifest)
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise Fail(f"{shown} is not a valid InferenceService; the CRD's schema says:\n  " +
                       "\n  ".join(errors[:3]) + more)
        if manifest.get("apiVersion") != "serving.kserve.io/v1beta1" or manifest.get("kind") != "InferenceService":
            raise Fail(f"{shown}: the manifest should be a serving.kserve.io/v1beta1 InferenceService, not "
                       f"{manifest.get('apiVersion')} {manifest.get('kind')}.")
        if _get(manifest, "metadata", "name") != settings["name"]:
            raise Fail(f"{shown}: metadata.name is {safe_repr(_get(manifest, 'metadata', 'name'))}; the service "
                       "takes the model's name, from its settings.")
        model = _get(manifest, "spec", "predictor", "model")
        if not isinstance(model, dict):
            raise Fail(f"{shown}: there is no spec.predictor.model. The per-framework fields (predictor.sklearn, "
                       "...) are the old form: name the model format and the runtime under predictor.model.")
        expected = platforms.FORMATS[settings["implementation"]]
        if _get(model, "modelFormat", "name") != expected:
            raise Fail(f"{shown}: modelFormat.name is {safe_repr(_get(model, 'modelFormat', 'name'))}, but this "
                       f"folder's implementation is {settings['implementation']}.")
        if model.get("runtime") != RUNTIME:
            raise Fail(f"{shown}: runtime is {safe_repr(model.get('runtime'))}. Name KServe's MLServer runtime "
                       "explicitly; left out, KServe picks one by format and priority, which need not be MLServer.")
        if model.get("protocolVersion") != "v2":
            raise Fail(f"{shown}: protocolVersion is {safe_repr(model.get('protocolVersion'))}; MLServer speaks "
                       "the Open Inference Protocol, which KServe calls v2 (its default is v1).")
        if model.get("storageUri") != uri:
            raise Fail(f"{shown}: storageUri is {safe_repr(model.get('storageUri'))}; it should be the folder "
                       f"{uri!r} as given (KServe downloads the whole folder, settings included).")
        _check_resources(shown, model.get("resources") or {}, cpu, memory_mb)
    return (f"Valid InferenceServices for {len(platforms.FORMATS)} hidden model folders, one per model format: the "
            "right format, runtime, protocol, storage and resources.")


def _check_resources(shown, resources, cpu, memory_mb):
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    memory = memory_mb * 2**20
    got_cpu = quantity(requests.get("cpu"))
    if got_cpu is None or not math.isclose(got_cpu, cpu, rel_tol=1e-9):
        raise Fail(f"{shown}: resources.requests.cpu is {safe_repr(requests.get('cpu'))}, which is not {cpu:g} "
                   "cores (\"500m\" is half a core).")
    for part, values in [("requests", requests), ("limits", limits)]:
        got = quantity(values.get("memory"))
        if got is None:
            raise Fail(f"{shown}: resources.{part}.memory is missing. A pod without a memory "
                       f"{'request is placed anywhere' if part == 'requests' else 'limit can take the node down'}.")
        if not math.isclose(got, memory, rel_tol=1e-9):
            unit = " M is 10^6 bytes; Mi is 2^20." if math.isclose(got, memory_mb * 1e6, rel_tol=1e-9) else ""
            raise Fail(f"{shown}: resources.{part}.memory is {safe_repr(values.get('memory'))} = {got / 2**20:.1f} "
                       f"MiB, not {memory_mb} MiB.{unit}")


# -- exercise 2 -------------------------------------------------------------------------------------------------
P99 = math.log(100)  # an exponential response time's p99 is ln(100) times its mean


def reference_replicas(rate, p99_target, service_times, max_utilisation):
    """Replicas of M/M/1 servers behind a balancer: p99 within the target and utilisation at most the cap."""
    mu = 1 / float(np.mean(service_times))
    headroom = mu - P99 / p99_target  # the most each replica may take and still meet the p99 target
    if headroom <= 0:
        return None
    return max(1, math.ceil(rate / headroom), math.ceil(rate / (max_utilisation * mu)))


# The mistakes every call must catch: each one's answer differs from the reference on some hidden case.
_MISTAKES = {
    "median": lambda r, t, s, u: reference_replicas(r, t, [float(np.median(s))], u),
    "no latency": lambda r, t, s, u: max(1, math.ceil(r * np.mean(s) / u)),
    "no cap": lambda r, t, s, u: reference_replicas(r, t, s, 1.0),
    "mean target": lambda r, t, s, u: _with_factor(r, t, s, u, 1.0),
    "round": lambda r, t, s, u: _rounded(r, t, s, u, round),
    "floor": lambda r, t, s, u: _rounded(r, t, s, u, math.floor),
}


def _with_factor(rate, target, samples, cap, factor):
    mu = 1 / float(np.mean(samples))
    if mu <= factor / target:
        return None
    return max(1, math.ceil(rate / (mu - factor / target)), math.ceil(rate / (cap * mu)))


def _rounded(rate, target, samples, cap, rounding):
    mu = 1 / float(np.mean(samples))
    if mu <= P99 / target:
        return None
    return max(1, int(rounding(max(rate / (mu - P99 / target), rate / (cap * mu)))))


def _fractions(rate, target, samples, cap):
    """How far the two ratios are from whole numbers (cases near a whole number are left out: there, the
    order of floating-point operations could decide the answer)."""
    mu = 1 / float(np.mean(samples))
    ratios = [rate / (cap * mu)] + ([rate / (mu - P99 / target)] if mu > P99 / target else [])
    return min(abs(x - round(x)) for x in ratios)


def _random_case(rng):
    mean = float(rng.uniform(0.002, 0.05))
    sigma = float(rng.uniform(0.3, 1.0))
    samples = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=int(rng.integers(40, 300)))
    cap = float(rng.choice([0.5, 0.6, 0.7, 0.8]))
    target = float(np.mean(samples) * rng.uniform(5.0, 30.0))
    rate = float(rng.uniform(0.3, 60.0) / np.mean(samples))
    return round(rate, 1), round(target, 4), [round(float(x), 6) for x in samples], cap


def _hidden_cases(rng):
    cases, refuted = [], set()
    for _ in range(400):
        if refuted == set(_MISTAKES) and len(cases) >= 6:
            break
        case = _random_case(rng)
        if _fractions(*case) < 0.05:
            continue
        expected = reference_replicas(*case)
        wrong = {name for name, mistake in _MISTAKES.items() if mistake(*case) != expected}
        if wrong - refuted or len(cases) < 6:
            cases.append(case)
            refuted |= wrong
    # a target that no number of replicas meets: faster than one idle replica's p99
    rate, _, samples, cap = _random_case(rng)
    cases.insert(int(rng.integers(len(cases) + 1)), (rate, round(float(np.mean(samples)) * rng.uniform(1.5, 4.0), 4),
                                                     samples, cap))
    return cases


def _why(n, rate, target, samples, cap):
    mu = 1 / float(np.mean(samples))
    per = rate / n
    p99 = P99 / (mu - per) if mu > per else math.inf
    return (f"with {n} replicas each gets {per:.1f} req/s: utilisation {per / mu:.0%} (cap {cap:.0%}), "
            f"p99 {'unbounded' if math.isinf(p99) else f'{1000 * p99:.1f} ms'} (target {1000 * target:.1f} ms)")


@register(
    "10.replicas",
    points=2,
    title="Replicas for a request rate and a latency target",
    hints=(
        "Two limits, take the stricter: no replica may be busier than the utilisation cap, and each replica's "
        "p99 must stay within the target. A replica serves 1 / (mean service time) requests per second at most.",
        "Model each replica as an M/M/1 queue: its response time is exponential with rate mu - lambda, so its "
        "p99 is ln(100) / (mu - lambda). Solve p99 <= target for lambda, the rate one replica may take.",
        "Replicas are whole: round up (math.ceil), never down, and at least 1. When even an idle replica misses "
        "the target (ln(100) / mu > target), no number of replicas helps: return None.",
    ),
)
def replicas(answer, rng):
    expect_function(answer, "replicas_for", "rate, p99_target, service_times and max_utilisation")
    cases = _hidden_cases(rng)
    for rate, target, samples, cap in cases:
        shown = f"replicas_for({rate}, {target}, <{len(samples)} service times>, {cap})"
        got = call(answer, shown, rate, target, list(samples), cap)
        expected = reference_replicas(rate, target, samples, cap)
        if expected is None:
            if got is not None:
                idle = 1000 * P99 * float(np.mean(samples))
                raise Fail(f"{shown} returned {safe_repr(got)}; no number of replicas meets a p99 target of "
                           f"{1000 * target:.1f} ms: even an idle replica's p99 is {idle:.1f} ms. Return None.")
            continue
        if got is None or isinstance(got, bool):
            raise Fail(f"{shown} returned {safe_repr(got)}; {expected} replicas meet this target.")
        value = number(got, shown)
        if value != int(value) if math.isfinite(value) else True:
            raise Fail(f"{shown} returned {safe_repr(got)}; replicas are a whole number.")
        n = int(value)
        if n < expected:
            raise Fail(f"{shown} returned {n}: too few; {_why(max(n, 1), rate, target, samples, cap)}.")
        if n > expected:
            raise Fail(f"{shown} returned {n}: more than needed; {_why(n - 1, rate, target, samples, cap)}, "
                       "which already meets both.")
    return f"Right for {len(cases)} hidden rates, targets and measurements, the impossible target included."

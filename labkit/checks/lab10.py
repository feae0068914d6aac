"""Checks of lab 10, "Beyond one laptop"."""

from __future__ import annotations

import math
import re
import string

import numpy as np

from labkit import platforms
from labkit.checks import Fail, call, expect_function, json_roundtrip, number, register, safe_repr

RUNTIME = "kserve-mlserver"  # KServe's ServingRuntime that runs MLServer
quantity = platforms.quantity  # a Kubernetes quantity as a number (kept here: the lab's tests import it from here)


# -- exercise 1 -------------------------------------------------------------------------------------------------
def _hidden_folder(rng, implementation, cpu):
    """A model folder as the manifest needs it: its settings, where its files are stored, and its budget."""
    stem = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(4, 9))))
    name = f"{stem}-{int(rng.integers(1, 99))}"  # nothing in the name tells the format: it comes from the settings
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
    for case in _boundary_cases(rng):
        cases.insert(int(rng.integers(len(cases) + 1)), case)
    return cases


def _dyadic_samples(rng, mu):
    """64 skewed service times whose mean is exactly 1 / mu (a power of two): multiples of 1 / (16 mu), so every
    sum, mean and product below is exact in floating point, whatever order a student's code computes it in."""
    weights = rng.lognormal(0.0, 0.8, size=64)
    units = 1 + rng.multinomial(64 * 16 - 64, weights / weights.sum())
    return [float(k) / (16 * mu) for k in units]


def _boundary_cases(rng):
    """The limits the exercise states, exactly: utilisation exactly at the cap (allowed), the p99 exactly at the
    target (allowed), a hair beyond each (one more replica), no traffic at all (still one replica), and a target
    just above an idle replica's p99 (a fraction of a request per second each: many replicas, not None).

    Not among them: a target exactly equal to an idle replica's p99 (ln(100) / mu). There the answer hangs on
    the last bit of ln(100): np.log(100) is one unit in the last place below math.log(100), and with it a right
    answer finds about 1e-16 mu of capacity left instead of none, and asks for some 1e15 replicas, or loops."""
    mu = float(2 ** int(rng.integers(5, 9)))  # 32 to 256 requests/s
    samples = _dyadic_samples(rng, mu)
    n = int(rng.integers(2, 9))
    cap = float(rng.choice([0.5, 0.75]))
    loose = round(P99 / ((1 - cap) * mu) * float(rng.uniform(2.0, 4.0)), 4)  # a target that does not bind
    margin = mu / 2 ** int(rng.integers(1, 3))  # ln(100) / T: T is ln(100) scaled by a power of two, exactly
    tight, per_replica = P99 / margin, mu - margin
    room = float(rng.choice([0.875, 0.9375]))  # a cap that does not bind: above per_replica / mu
    slack = float(rng.choice([0.25, 0.5, 0.75]))  # requests/s one replica may take at a target near its idle p99
    return [
        (n * cap * mu, loose, samples, cap),  # utilisation exactly at the cap: n replicas
        (n * cap * mu + cap * mu / 2**20, loose, _dyadic_samples(rng, mu), cap),  # a hair above: n + 1
        (n * per_replica, tight, _dyadic_samples(rng, mu), room),  # p99 exactly at the target: n replicas
        (n * per_replica + per_replica / 2**20, tight, _dyadic_samples(rng, mu), room),  # a hair above: n + 1
        (0.0, loose, _dyadic_samples(rng, mu), cap),  # no traffic: still at least one replica
        # a target just above an idle replica's p99: each replica may take under one request per second, so
        # many replicas, but not None
        ((int(rng.integers(10, 40)) + 0.5) * slack, P99 / (mu - slack), _dyadic_samples(rng, mu), cap),
    ]


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
        "Replicas are whole: round up (math.ceil), never down, and at least 1; a limit met exactly is met. When "
        "even an idle M/M/1 replica misses the target (ln(100) / mu >= target), no number of replicas helps under "
        "that model: return None.",
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
                raise Fail(f"{shown} returned {safe_repr(got)}; under M/M/1 no number of replicas meets a p99 "
                           f"target of {1000 * target:.1f} ms: even an idle replica's p99, ln(100) x the mean service "
                           f"time, is {idle:.1f} ms. Return None.")
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


# -- exercise 3: Seldon Core 2 -----------------------------------------------------------------------------------
SELDON_API = "mlops.seldon.io/v1alpha1"
CUSTOM_RUNTIMES = ["onnx_runtime.OnnxModel", "diagnosis_runtime.DiagnosisModel", "drift_detector.DriftDetector"]
# Kubernetes object names: DNS subdomains (RFC 1123), at most 253 characters
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _seldon_folder(rng, implementation):
    settings, storage_uri, _, memory_mb = _hidden_folder(rng, implementation, 1.0)
    return {"settings": settings, "storage_uri": storage_uri, "memory_mb": memory_mb}


def _seldon_cases(rng):
    """Four canaries: every model format and a custom runtime on both sides, and the split at its extremes
    (1 % and 99 %) as well as on either side of one half."""
    formats = [str(f) for f in rng.permutation(sorted(platforms.FORMATS))]
    customs = [str(c) for c in rng.permutation(CUSTOM_RUNTIMES)]
    current = [formats[0], formats[1], customs[0], formats[2]]
    candidate = [customs[1], formats[3], formats[int(rng.integers(4))], customs[2]]
    percents = rng.permutation([1, 99, int(rng.integers(2, 50)), int(rng.integers(51, 99))])
    return [(_seldon_folder(rng, a), _seldon_folder(rng, b), int(p))
            for a, b, p in zip(current, candidate, percents, strict=True)]


def _requirements_problem(requirements, settings):
    """What is wrong with a Model's ``requirements`` for this folder, or None. Right: capabilities of Seldon's
    MLServer only, not all of them Triton's too, and no model format other than the folder's own."""
    mlserver, triton = platforms.SELDON_CAPABILITIES["mlserver"], platforms.SELDON_CAPABILITIES["triton"]
    expected = platforms.model_format(settings)
    if not isinstance(requirements, list) or not requirements:
        return ("has no requirements: Seldon may then place it on any server, Triton included, which cannot run "
                "an MLServer folder")
    unknown = [r for r in requirements if r not in mlserver]
    if unknown:
        return (f"requires {unknown}, which Seldon's MLServer does not offer (its capabilities: "
                f"{', '.join(sorted(mlserver))}): no server would take the model")
    if set(requirements) <= triton:
        return (f"requires only {requirements}, which Triton offers too: Seldon may schedule this MLServer folder on "
                "Triton. Ask for a capability that only MLServer has")
    formats = set(requirements) - {"mlserver", "python"}
    if expected is None and formats:
        return (f"requires {sorted(formats)}, but its implementation {settings['implementation']} is a custom runtime, "
                "not a model of that format: ask for MLServer itself")
    if expected is not None and formats - {expected}:
        return f"requires {sorted(formats)}, but the folder's implementation {settings['implementation']} is {expected}"
    return None


def _check_seldon_model(shown, model, folder):
    settings = folder["settings"]
    name = settings["name"]
    spec = model.get("spec") or {}
    if spec.get("storageUri") != folder["storage_uri"]:
        raise Fail(f"{shown}: Model {name}'s storageUri is {safe_repr(spec.get('storageUri'))}; it should be the "
                   f"folder {folder['storage_uri']!r} as given.")
    problem = _requirements_problem(spec.get("requirements"), settings)
    if problem:
        raise Fail(f"{shown}: Model {name} {problem}.")
    memory = quantity(spec.get("memory")) if "memory" in spec else None
    if memory is None:
        raise Fail(f"{shown}: Model {name} has no memory: Seldon places models on a server by the memory they "
                   "declare.")
    if not math.isclose(memory, folder["memory_mb"] * 2**20, rel_tol=1e-9):
        unit = " M is 10^6 bytes; Mi is 2^20." if math.isclose(memory, folder["memory_mb"] * 1e6, rel_tol=1e-9) else ""
        raise Fail(f"{shown}: Model {name}'s memory is {safe_repr(spec.get('memory'))} = {memory / 2**20:.1f} MiB, "
                   f"not {folder['memory_mb']} MiB.{unit}")


def _check_split(shown, spec, current, candidate, percent):
    if spec.get("default") != current:
        raise Fail(f"{shown}: the Experiment's default is {safe_repr(spec.get('default'))}; it should be {current!r}, "
                   "the model whose endpoint (and traffic) the experiment takes over.")
    candidates = spec.get("candidates") or []
    names = sorted(str(c.get("name")) for c in candidates)
    if names != sorted([current, candidate]):
        raise Fail(f"{shown}: the Experiment's candidates are {names}; they should be the two models, "
                   f"{current!r} and {candidate!r}, each once, with its weight.")
    weights = {c["name"]: c["weight"] for c in candidates}
    if any(w <= 0 for w in weights.values()):
        raise Fail(f"{shown}: the weights are {weights}; both models must get traffic, so both weights are positive.")
    total = sum(weights.values())
    if weights[candidate] * 100 != percent * total:  # integers: exact
        raise Fail(f"{shown}: the weights {weights} send {100 * weights[candidate] / total:.4g} % of the traffic to "
                   f"{candidate}, not {percent} %. Seldon splits by weight / sum of the weights.")


@register(
    "10.seldon_canary",
    points=2,
    title="A Seldon Core 2 canary: two Models and an Experiment",
    hints=(
        "Return three manifests: a Model for each folder and an Experiment. Each must pass its CRD's schema first "
        "(platforms.validate), then schedule on MLServer and split the traffic as asked.",
        "A Model's requirements are matched against the servers' capabilities (platforms.SELDON_CAPABILITIES): the "
        "folder's model format, or, for a custom runtime, a capability only MLServer has (python is Triton's too). "
        "memory is a Kubernetes quantity in Mi.",
        "The Experiment's default is the current model; candidates list both models with integer weights, and a "
        "model gets weight / (sum of the weights) of the traffic: percent and 100 - percent do it.",
    ),
)
def seldon_canary(answer, rng):
    expect_function(answer, "seldon_canary", "current, candidate and percent")
    for current, candidate, percent in _seldon_cases(rng):
        names = {"current": current["settings"]["name"], "candidate": candidate["settings"]["name"]}
        shown = f"seldon_canary(<folder {names['current']}>, <folder {names['candidate']}>, {percent})"
        got = call(answer, shown, json_roundtrip(current, "current"), json_roundtrip(candidate, "candidate"), percent)
        documents = json_roundtrip(got, f"what {shown} returned")
        if not isinstance(documents, list) or len(documents) != 3:
            raise Fail(f"{shown} returned {safe_repr(got)}; return a list of three manifests: the two Models and "
                       "the Experiment.")
        for document in documents:
            errors = platforms.validate(document)
            if errors:
                what = (f"{document.get('kind')} {safe_repr(_get(document, 'metadata', 'name'))}"
                        if isinstance(document, dict) else safe_repr(document))
                raise Fail(f"{shown}: {what} is not valid; the CRD's schema says:\n  " + "\n  ".join(errors[:3]))
            name = _get(document, "metadata", "name")
            if not isinstance(name, str) or len(name) > 253 or not _DNS_NAME.match(name):
                raise Fail(f"{shown}: metadata.name {safe_repr(name)} is not a Kubernetes name (lower-case letters, "
                           "digits, '-' and '.').")
        kinds = sorted(d["kind"] for d in documents)
        if kinds != ["Experiment", "Model", "Model"]:
            raise Fail(f"{shown} returned {', '.join(kinds)}; a canary needs two Models and one Experiment.")
        models = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Model"}
        if sorted(models) != sorted(names.values()):
            raise Fail(f"{shown}: the Models are named {sorted(models)}; each takes its folder's name from its "
                       f"settings: {names['current']!r} and {names['candidate']!r}.")
        for folder in (current, candidate):
            _check_seldon_model(shown, models[folder["settings"]["name"]], folder)
        [experiment] = [d for d in documents if d["kind"] == "Experiment"]
        _check_split(shown, experiment.get("spec") or {}, names["current"], names["candidate"], percent)
    return ("Valid Models and Experiments for 4 hidden canaries (every format, custom runtimes, splits of 1 % to "
            "99 %): scheduled on MLServer, with the right memory, and the traffic split as asked.")


# -- exercise 4: an ONNX export ----------------------------------------------------------------------------------
ONNX_TOLERANCE = 1e-5  # the most a probability may differ from scikit-learn's (float32 against float64)


def lab_pipeline():
    """The lab's model, unfitted: the one ``export_onnx`` fits and converts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _onnx_cases(rng):
    """Three hidden training sets, each with rows the model never saw: the lab's 30 features, a random subset of
    them, and three classes with arbitrary labels and features of every scale."""
    from labkit.data import load_breast_cancer

    data = load_breast_cancer()
    X, y = data.X.values.astype(np.float64), data.y.values.astype(np.int64)
    cases = []
    for width in (X.shape[1], int(rng.integers(3, 12))):
        rows, columns = rng.permutation(len(X)), np.sort(rng.permutation(X.shape[1])[:width])
        train, hidden = rows[:300], rows[300:]
        cases.append((X[train][:, columns], y[train], X[hidden][:, columns]))
    width = int(rng.integers(4, 9))
    labels = np.sort(rng.choice(np.arange(1, 20), size=3, replace=False)).astype(np.int64)
    centres = rng.normal(0, 1.5, size=(3, width))
    # scales from 0.01 to 100 and offsets of a few spreads: far from zero, yet within float32's precision (an
    # offset of thousands of spreads would round the rows themselves, and no export could match)
    scale = 10.0 ** rng.uniform(-2, 2, size=width)
    offset = rng.uniform(-4, 4, size=width) * scale
    k = rng.integers(3, size=400)
    rows = (centres[k] + rng.normal(size=(400, width))) * scale + offset
    cases.append((rows[:250], labels[k[:250]], rows[250:]))
    return cases


def _onnx_session(data, shown):
    import onnxruntime

    if not isinstance(data, (bytes, bytearray)):
        more = " (call .SerializeToString() on the ModelProto)" if hasattr(data, "SerializeToString") else ""
        raise Fail(f"{shown} returned {safe_repr(data)}; return the ONNX model's bytes{more}.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4  # its own errors come back in the exception
    try:
        return onnxruntime.InferenceSession(bytes(data), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Fail(f"onnxruntime cannot load what {shown} returned: {str(e)[:300]}") from None


def _check_signature(shown, session, width):
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise Fail(f"{shown}: the graph has {len(inputs)} inputs; onnx_runtime.py feeds one, the rows.")
    [feed] = inputs
    if feed.type != "tensor(float)":
        raise Fail(f"{shown}: the input is a {feed.type}; make it tensor(float) (float32), which onnx_runtime.py "
                   "feeds: convert with an example of X.astype(np.float32).")
    shape = list(feed.shape)
    if len(shape) != 2 or isinstance(shape[0], int) or shape[1] != width:
        raise Fail(f"{shown}: the input's shape is {shape}; it should be [None, {width}]: any number of rows of "
                   f"{width} features (a fixed first dimension refuses every other batch size).")
    if len(outputs) != 2:
        raise Fail(f"{shown}: the graph has {len(outputs)} outputs; onnx_runtime.py serves two, the labels and the "
                   "probabilities.")
    label, probabilities = outputs
    if probabilities.type != "tensor(float)":
        raise Fail(f"{shown}: the second output is a {probabilities.type}, not a matrix of probabilities: convert "
                   "with options={'zipmap': False}, or each row becomes a list of {class: probability} maps.")
    if label.type != "tensor(int64)":
        raise Fail(f"{shown}: the first output is a {label.type}; it should be the labels, tensor(int64).")
    return feed.name


@register(
    "10.onnx_export",
    points=2,
    title="An ONNX export that agrees with scikit-learn",
    hints=(
        "Fit a fresh copy of the lab's model (sklearn.base.clone(model)) on X and y, convert it with skl2onnx, and "
        "return the bytes (model.SerializeToString()).",
        "What onnx_runtime.py serves: one float32 input of shape [None, n_features] (skl2onnx takes both from an "
        "example such as X[:1].astype(np.float32)) and two outputs, the labels and a probability matrix "
        "(options={'zipmap': False}).",
        "The check runs your file with onnxruntime on rows the model never saw and compares with scikit-learn: "
        f"probabilities within {ONNX_TOLERANCE:g}, the same classes.",
    ),
    time_limit=30,  # fitting and converting three models, and onnxruntime sessions, on a busy machine
)
def onnx_export(answer, rng):
    expect_function(answer, "export_onnx", "X and y")
    for X, y, hidden in _onnx_cases(rng):
        shown = f"export_onnx(<{X.shape[0]} rows of {X.shape[1]} features>, <labels {sorted(set(y.tolist()))}>)"
        data = call(answer, shown, X.copy(), y.copy())
        session = _onnx_session(data, shown)
        reference = lab_pipeline().fit(X, y)
        feed = _check_signature(shown, session, X.shape[1])
        expected = reference.predict_proba(hidden)
        for rows in (hidden[:1], hidden):  # one row, and a batch
            try:
                labels, probabilities = session.run(None, {feed: rows.astype(np.float32)})
            except Exception as e:
                raise Fail(f"{shown}: onnxruntime could not run the model on {len(rows)} rows: {str(e)[:300]}") \
                    from None
        labels, probabilities = np.asarray(labels).reshape(-1), np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != expected.shape:
            raise Fail(f"{shown}: the probabilities have shape {list(probabilities.shape)} for {len(hidden)} rows; "
                       f"expected {list(expected.shape)}, one column per class.")
        gap = float(np.abs(probabilities - expected).max()) if np.isfinite(probabilities).all() else math.inf
        if gap > ONNX_TOLERANCE:
            raise Fail(f"{shown}: on {len(hidden)} rows the model never saw, a probability differs from the lab's "
                       f"scikit-learn pipeline fitted on the same rows by {gap:.2g} (at most {ONNX_TOLERANCE:g}): "
                       "export that pipeline, fitted on X and y.")
        top = np.sort(expected, axis=1)
        clear = top[:, -1] - top[:, -2] > ONNX_TOLERANCE  # rows a float32 rounding cannot tip over
        wrong = int((labels[clear] != reference.predict(hidden)[clear]).sum()) if labels.shape == (len(hidden),) \
            else len(hidden)
        if wrong:
            raise Fail(f"{shown}: the labels differ from scikit-learn's on {wrong} of {int(clear.sum())} rows; they "
                       f"should be the classes themselves ({sorted(set(y.tolist()))}).")
    return (f"Three hidden exports (30 features, a few, three classes): float32 rows of any count in, labels and "
            f"probabilities out, within {ONNX_TOLERANCE:g} of scikit-learn on rows the models never saw.")


# -- exercise 5: which file goes on the device -------------------------------------------------------------------
def reference_variant(variants, reference, max_bytes, max_extra_errors):
    """The smallest file that fits and loses at most ``max_extra_errors`` test rows against ``reference``
    (fewer errors first among equal sizes), or None."""
    allowed = variants[reference]["errors"] + max_extra_errors
    fitting = [(v["bytes"], v["errors"], label) for label, v in variants.items()
               if v["bytes"] <= max_bytes and v["errors"] <= allowed]
    return min(fitting)[2] if fitting else None


_KINDS = ["float32", "float16", "int8 dynamic", "int8 static", "int4", "pruned", "distilled", "joblib"]


def _variant_table(rng, largest_reference=True):
    """Four to six files of distinct sizes; the reference (the model as trained) the largest unless told."""
    labels = [str(k) for k in rng.permutation(_KINDS)[: int(rng.integers(4, 7))]]
    sizes = sorted(int(b) for b in rng.choice(np.arange(8_000, 400_000), size=len(labels), replace=False))
    errors = rng.integers(0, 25, size=len(labels))
    table = {label: {"bytes": b, "errors": int(e)} for label, b, e in zip(labels, sizes, errors, strict=True)}
    reference = labels[-1] if largest_reference else labels[int(rng.integers(len(labels)))]
    shuffled = [labels[i] for i in rng.permutation(len(labels))]  # the table's order says nothing
    return {label: table[label] for label in shuffled}, reference


def _edge_cases(rng):
    """Tables of variants with the limits the exercise states on the answer itself: its size exactly at the budget,
    its extra errors exactly at the tolerance, a tie in size, none that fits, the reference the only one, a
    reference that is not error-free, and no tolerance at all."""
    cases = []

    def add(table, reference, max_bytes, extra, kind):
        cases.append((table, reference, int(max_bytes), int(extra), kind))

    # the answer's size exactly at the budget, and smaller files that lose too much
    table, ref = _variant_table(rng)
    ref_errors = table[ref]["errors"] = int(rng.integers(3, 12))
    extra = int(rng.integers(1, 4))
    order = sorted(table, key=lambda k: table[k]["bytes"])
    answer = next(k for k in order[1:] if k != ref)
    for k in order[: order.index(answer)]:
        if k != ref:
            table[k]["errors"] = ref_errors + extra + int(rng.integers(1, 5))
    table[answer]["errors"] = ref_errors + int(rng.integers(0, extra + 1))
    add(table, ref, table[answer]["bytes"], extra, "size at the budget")
    # the answer's extra errors exactly at the tolerance
    table, ref = _variant_table(rng)
    ref_errors = table[ref]["errors"] = int(rng.integers(2, 10))
    extra = int(rng.integers(1, 5))
    smallest = min((k for k in table if k != ref), key=lambda k: table[k]["bytes"])
    table[smallest]["errors"] = ref_errors + extra
    add(table, ref, max(v["bytes"] for v in table.values()) + int(rng.integers(1, 999)), extra, "errors at the limit")
    # two files of the same size that both fit: the one with fewer errors, listed first in one table and second
    # in the other (so that neither "the first of the smallest" nor "the last" passes by the order)
    for better_first in rng.permutation([True, False]):
        table, ref = _variant_table(rng)
        table[ref]["errors"] = int(rng.integers(5, 12))
        a, b = [k for k in sorted(table, key=lambda k: table[k]["bytes"]) if k != ref][:2]
        table[b]["bytes"] = table[a]["bytes"]
        table[a]["errors"], table[b]["errors"] = table[ref]["errors"] + int(rng.integers(0, 2)), \
            table[ref]["errors"] + 2
        rest = [k for k in table if k not in (a, b)]
        listed = [a, b] if better_first else [b, a]
        at = int(rng.integers(len(rest) + 1))
        table = {k: table[k] for k in rest[:at] + listed + rest[at:]}
        add(table, ref, table[a]["bytes"] + int(rng.integers(0, 5000)), 2, "a tie in size")
    # nothing fits: every file over the budget
    table, ref = _variant_table(rng)
    add(table, ref, min(v["bytes"] for v in table.values()) - 1, int(rng.integers(0, 5)), "nothing fits")
    # only the reference itself qualifies, and no extra error is allowed
    table, ref = _variant_table(rng)
    table[ref]["errors"] = int(rng.integers(1, 8))
    for k in table:
        if k != ref:
            table[k]["errors"] = table[ref]["errors"] + int(rng.integers(1, 6))
    add(table, ref, table[ref]["bytes"] + int(rng.integers(0, 100)), 0, "only the reference")
    # random tables, each with its answer unique (no two files with the same size and errors)
    while len(cases) < 10:
        table, ref = _variant_table(rng, largest_reference=False)
        budget = int(rng.integers(8_000, 420_000))
        add(table, ref, budget, int(rng.integers(0, 8)), "random")
    order = rng.permutation(len(cases))
    return [cases[i] for i in order]


def _describe(table, reference, max_bytes, extra):
    rows = ", ".join(f"{k}: {v['bytes']} B, {v['errors']} errors" for k, v in table.items())
    return f"pick_variant({{{rows}}}, reference={reference!r}, max_bytes={max_bytes}, max_extra_errors={extra})"


@register(
    "10.edge_choice",
    points=1,
    title="Which file goes on the device",
    hints=(
        "Two limits on a file: its size at most max_bytes, and its errors at most the reference's errors plus "
        "max_extra_errors (both inclusive). Among the files within both, the smallest; None when none is.",
        "Compare each file's errors with the reference's errors on the same test rows, not with zero; the reference "
        "itself qualifies if it fits. Among files of the same size, the one with fewer errors.",
    ),
)
def edge_choice(answer, rng):
    expect_function(answer, "pick_variant", "variants, reference, max_bytes and max_extra_errors")
    cases = _edge_cases(rng)
    for table, reference, max_bytes, extra, _ in cases:
        shown = _describe(table, reference, max_bytes, extra)
        got = call(answer, shown, json_roundtrip(table, "variants"), reference, max_bytes, extra)
        expected = reference_variant(table, reference, max_bytes, extra)
        if got == expected and (got is None or isinstance(got, str)):
            continue
        if expected is None:
            raise Fail(f"{shown} returned {safe_repr(got)}; no file is within both limits here: return None.")
        if not isinstance(got, str) or got not in table:
            raise Fail(f"{shown} returned {safe_repr(got)}; return the label of a variant ({expected!r} here).")
        chosen, allowed = table[got], table[reference]["errors"] + extra
        if chosen["bytes"] > max_bytes:
            why = f"it is {chosen['bytes']} bytes, over the budget of {max_bytes}"
        elif chosen["errors"] > allowed:
            why = (f"it makes {chosen['errors']} errors, more than the reference's {table[reference]['errors']} + "
                   f"{extra}")
        else:
            why = f"{expected!r} is within both limits too, and smaller (or as small, with fewer errors)"
        raise Fail(f"{shown} returned {got!r}, but {why}.")
    return f"Right for {len(cases)} hidden tables of files, with each limit met exactly and a tie in size."

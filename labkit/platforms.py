"""Serving platforms (lab 10): validate Kubernetes manifests offline against the schemas the platforms publish.

The schemas are data files in ``labkit/schemas/`` (their sources, versions and licences are in its README):
KServe's ``InferenceService``, Seldon Core 2's ``Model`` and ``Experiment`` and Zero to JupyterHub's
``values.yaml``. An API server validates a custom resource against its CRD's ``openAPIV3Schema``; ``validate``
does the same with ``jsonschema``, and, like ``kubectl apply --validate=strict``, also refuses fields that the
schema does not know (a typo such as ``storageURI`` would otherwise be dropped without a word).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).with_name("schemas")
# (apiVersion, kind) -> schema file
KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve_inferenceservice.json",
    ("mlops.seldon.io/v1alpha1", "Model"): "seldon_model.json",
    ("mlops.seldon.io/v1alpha1", "Experiment"): "seldon_experiment.json",
}
Z2JH_VALUES = "z2jh_values.json"
Z2JH_DEFAULTS = "z2jh_defaults.json"

# MLServer's inference runtimes and the model format each platform knows them by: KServe's `kserve-mlserver`
# ServingRuntime serves these formats with MLServer, and Seldon Core 2 schedules a Model on a server whose
# capabilities include its `requirements`.
FORMATS = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
    "mlserver_mlflow.MLflowRuntime": "mlflow",
}


# The capabilities that Seldon Core 2 gives its two default servers (its documentation's "Servers" page): a Model
# is scheduled on a server whose capabilities include every one of its `requirements`. `python` is in both lists,
# so a Model that asks only for `python` may land on Triton; `mlserver` selects MLServer whatever the runtime.
SELDON_CAPABILITIES = {
    "mlserver": frozenset({"mlserver", "alibi-detect", "alibi-explain", "huggingface", "lightgbm", "mlflow", "python",
                           "sklearn", "spark-mlib", "xgboost"}),
    "triton": frozenset({"triton", "dali", "fil", "onnx", "openvino", "python", "pytorch", "tensorflow", "tensorrt"}),
}


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


def kubespawner_bytes(value) -> int:
    """Bytes of a memory size as JupyterHub reads it for ``mem_limit``/``mem_guarantee`` (KubeSpawner's, so Zero to
    JupyterHub's ``singleuser.memory``): a number of bytes, or a number with one of K, M, G, T, in powers of 1024
    (``jupyterhub.traitlets.ByteSpecification``). So ``"512M"`` is 512 x 2^20 bytes there, where a Kubernetes
    manifest reads 512 x 10^6; ``"512Mi"`` is refused there (``ValueError`` here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = str(value)
    try:
        return int(float(text[:-1]) * units[text[-1:]])
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a JupyterHub memory size: a number of bytes, or one with K, M, G or T") \
            from None


def model_format(settings: dict) -> str | None:
    """The model format of an MLServer ``model-settings.json`` (``"sklearn"``), or None for a custom runtime."""
    return FORMATS.get(settings.get("implementation", ""))


@cache
def _schema(name: str, strict: bool) -> dict:
    schema = json.loads((SCHEMAS / name).read_text())
    return _closed(schema) if strict else schema


def schema(name: str, *, strict: bool = False) -> dict:
    """A shipped schema by file name, e.g. ``schema("seldon_model.json")`` (a copy: change it freely)."""
    return copy.deepcopy(_schema(name, strict))


def _closed(node: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones and does not say "keep any"."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _closed(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


def schema_for(document: Any) -> str:
    """The schema file for a manifest's ``apiVersion`` and ``kind``; ``ValueError`` when none is shipped."""
    if not isinstance(document, dict):
        raise ValueError(f"a manifest is a mapping, not a {type(document).__name__}")
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in KINDS:
        known = ", ".join(f"{kind} ({api})" for api, kind in KINDS)
        raise ValueError(f"no schema for apiVersion {key[0]!r}, kind {key[1]!r}; known: {known}")
    return KINDS[key]


def validate(document: Any, schema_name: str | None = None, *, strict: bool = True) -> list[str]:
    """Every way ``document`` breaks its schema, as ``"<path>: <jsonschema's message>"``; [] when it is valid.

    ``schema_name`` defaults to the one for the manifest's ``apiVersion`` and ``kind`` (``Z2JH_VALUES`` for a
    chart's values). ``strict`` refuses unknown fields, as ``kubectl apply --validate=strict`` does.
    """
    try:
        name = schema_name or schema_for(document)
    except ValueError as e:
        return [f"$: {e}"]
    validator = jsonschema.Draft7Validator(_schema(name, strict))
    errors = sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{error.json_path}: {error.message}" for error in errors]


def helm_merge(defaults: Any, values: Any) -> Any:
    """``values`` over a chart's ``defaults`` as Helm merges them: mappings key by key, anything else replaced,
    and a key set to None removed."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return copy.deepcopy(values)
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(merged.get(key), value)
    return merged


def validate_z2jh_values(values: Any) -> list[str]:
    """What ``helm install`` of the Zero to JupyterHub chart would refuse in ``values`` (a parsed values.yaml):
    the chart's defaults merged with ``values``, validated against the chart's ``values.schema.json``."""
    return validate(helm_merge(_schema(Z2JH_DEFAULTS, False), values), Z2JH_VALUES, strict=False)


__all__ = ["FORMATS", "KINDS", "SELDON_CAPABILITIES", "Z2JH_DEFAULTS", "Z2JH_VALUES", "helm_merge", "kubespawner_bytes",
           "model_format", "quantity", "schema", "schema_for", "validate", "validate_z2jh_values"]

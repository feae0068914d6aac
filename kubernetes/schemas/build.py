"""Rebuild the Kubernetes schemas that labkit ships in labkit/schemas/ (lab 10 validates manifests with them).

Each comes from a public repository, read at a release tag (REFS) from a clone:

    python kubernetes/schemas/build.py --kserve KSERVE.git --seldon SELDON.git --z2jh Z2JH.git

It keeps each CRD's ``openAPIV3Schema`` (what the API server validates a resource against), drops the
descriptions, and replaces the subtrees the labs never write (pod affinity, volumes, init containers, the
legacy per-framework predictors, transformers, explainers, status) by an object that accepts anything,
so that the files stay small and validation of what the labs do write is unchanged. SOURCES.md says what
each file is, where it came from and under which licence.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "labkit" / "schemas"
OPAQUE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
SOURCES = {
    "kserve": ("config/crd/full/serving.kserve.io_inferenceservices.yaml", "kserve_inferenceservice.json"),
    "seldon_model": ("operator/config/crd/bases/mlops.seldon.io_models.yaml", "seldon_model.json"),
    "seldon_experiment": ("operator/config/crd/bases/mlops.seldon.io_experiments.yaml", "seldon_experiment.json"),
    "z2jh": ("jupyterhub/values.schema.yaml", "z2jh_values.json"),
    # Helm validates the chart's defaults merged with the user's values, so the defaults come along.
    "z2jh_defaults": ("jupyterhub/values.yaml", "z2jh_defaults.json"),
}
REFS = {"kserve": "v0.20.0", "seldon_model": "v2.10.2", "seldon_experiment": "v2.10.2", "z2jh": "4.3.2",
        "z2jh_defaults": "4.3.2"}
# Predictor fields the labs never write; everything else of the predictor is kept whole.
KSERVE_TRIMMED = {"affinity", "volumes", "workerSpec", "initContainers", "huggingface", "lightgbm", "onnx",
                  "paddle", "pmml", "pytorch", "sklearn", "tensorflow", "triton", "xgboost",
                  "topologySpreadConstraints", "securityContext"}


def without_descriptions(node):
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def crd_schema(text: str, version: str) -> dict:
    crd = yaml.safe_load(text)
    [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = without_descriptions(entry["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)  # written by the controller, never by a user
    return schema


def git_show(git_dir: str, ref: str, path: str) -> tuple[str, str]:
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", f"{ref}^{{commit}}"], capture_output=True,
                            text=True, check=True).stdout.strip()
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], capture_output=True,
                          text=True, check=True).stdout
    return commit, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kserve", required=True)
    parser.add_argument("--seldon", required=True)
    parser.add_argument("--z2jh", required=True)
    args = parser.parse_args()
    commits = {}

    commits["kserve"], text = git_show(args.kserve, REFS["kserve"], SOURCES["kserve"][0])
    schema = crd_schema(text, "v1beta1")
    spec = schema["properties"]["spec"]["properties"]
    for field in KSERVE_TRIMMED:
        spec["predictor"]["properties"][field] = OPAQUE
    spec["transformer"] = spec["explainer"] = OPAQUE
    if "canary" in spec:  # a list of whole predictors, newer than canaryTrafficPercent, which the lab uses
        spec["canary"] = {"type": "array", "items": OPAQUE}
    write(SOURCES["kserve"][1], schema)

    for key in ("seldon_model", "seldon_experiment"):
        commits[key], text = git_show(args.seldon, REFS[key], SOURCES[key][0])
        write(SOURCES[key][1], crd_schema(text, "v1alpha1"))

    commits["z2jh"], text = git_show(args.z2jh, REFS["z2jh"], SOURCES["z2jh"][0])
    write(SOURCES["z2jh"][1], without_descriptions(yaml.safe_load(text)))
    commits["z2jh_defaults"], text = git_show(args.z2jh, REFS["z2jh_defaults"], SOURCES["z2jh_defaults"][0])
    write(SOURCES["z2jh_defaults"][1], yaml.safe_load(text))
    for key, commit in commits.items():
        print(f"{SOURCES[key][1]}: {SOURCES[key][0]} at {REFS[key]} ({commit})")


def write(name: str, schema: dict) -> None:
    (OUT / name).write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()

"""The Kubernetes Indexed Job that grades a class in shards: valid against the batch/v1 Job fields it uses (a
schema that refuses any other field, so a typo fails), and its pods run the command the CLI accepts."""

import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from labkit.cli import main

MANIFEST = Path(__file__).resolve().parents[1] / "kubernetes" / "grade-job.yaml"


def closed(properties: dict, required=()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
QUANTITY = {"type": "string", "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti)?$"}
LABELS = {"type": "object", "additionalProperties": STRING}
PROFILE = closed({"type": {"enum": ["RuntimeDefault", "Unconfined", "Localhost"]}}, ["type"])
CONTAINER = closed({
    "name": STRING, "image": STRING, "command": {"type": "array", "items": STRING},
    "args": {"type": "array", "items": STRING},
    "env": {"type": "array", "items": closed({"name": STRING, "value": STRING}, ["name"])},
    "resources": closed({"requests": {"type": "object", "additionalProperties": QUANTITY},
                         "limits": {"type": "object", "additionalProperties": QUANTITY}}),
    "securityContext": closed({"allowPrivilegeEscalation": {"type": "boolean"},
                               "procMount": {"enum": ["Default", "Unmasked"]}, "appArmorProfile": PROFILE}),
    "volumeMounts": {"type": "array", "items": closed({"name": STRING, "mountPath": STRING,
                                                       "readOnly": {"type": "boolean"}}, ["name", "mountPath"])},
}, ["name", "image"])
VOLUME = closed({"name": STRING,
                 "persistentVolumeClaim": closed({"claimName": STRING, "readOnly": {"type": "boolean"}}, ["claimName"]),
                 "secret": closed({"secretName": STRING, "defaultMode": INT}, ["secretName"])}, ["name"])
JOB = closed({
    "apiVersion": {"const": "batch/v1"}, "kind": {"const": "Job"},
    "metadata": closed({"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}, "labels": LABELS},
                       ["name"]),
    "spec": closed({
        "completionMode": {"enum": ["NonIndexed", "Indexed"]}, "completions": INT, "parallelism": INT,
        "backoffLimit": INT, "ttlSecondsAfterFinished": INT,
        "template": closed({
            "metadata": closed({"labels": LABELS}),
            "spec": closed({"restartPolicy": {"enum": ["Never", "OnFailure"]}, "hostUsers": {"type": "boolean"},
                            "securityContext": closed({"seccompProfile": PROFILE}),
                            "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                            "volumes": {"type": "array", "items": VOLUME}}, ["containers"]),
        }, ["spec"]),
    }, ["template"]),
}, ["apiVersion", "kind", "metadata", "spec"])


@pytest.fixture(scope="module")
def job():
    return yaml.safe_load(MANIFEST.read_text())


def test_the_manifest_is_a_valid_indexed_job(job):
    jsonschema.validate(job, JOB)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    [container] = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert set(mounts) == set(volumes)
    assert mounts["submissions"]["readOnly"] and "secret" in volumes["key"]


@pytest.mark.parametrize("index", [0, 3])
def test_each_pod_grades_its_own_shard_with_the_shared_key(job, index, monkeypatch):
    spec = job["spec"]
    [container] = spec["template"]["spec"]["containers"]
    script = container["args"][0]
    assert "JOB_COMPLETION_INDEX" in script
    # What the pod's shell runs, with `labkit` swapped for printf: the words the CLI gets.
    words = subprocess.run(["sh", "-c", script.replace("exec labkit", "printf '%s\\n'", 1)], capture_output=True,
                           text=True, env={**os.environ, "JOB_COMPLETION_INDEX": str(index)}, check=True)
    argv = words.stdout.splitlines()
    assert argv[argv.index("--shard") + 1] == f"{index + 1}/{spec['completions']}"
    assert argv[argv.index("--out") + 1] == f"/grades/part-{index}"
    key = argv[argv.index("--key") + 1]
    assert any(key.startswith(m["mountPath"] + "/") for m in container["volumeMounts"] if m["name"] == "key")
    seen = {}
    monkeypatch.setattr("labkit.cli._grade", lambda args: seen.setdefault("args", args) and 0)
    assert main(argv) == 0  # the CLI accepts every option the pod passes
    assert seen["args"].shard == f"{index + 1}/{spec['completions']}"
    assert re.fullmatch(r"\d\d", seen["args"].lab)

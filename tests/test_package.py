"""Importing labkit puts TensorFlow into legacy Keras mode, which alibi-detect 0.13 needs to save detectors."""

import os
import subprocess
import sys


def run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)


def test_import_sets_legacy_keras_before_tensorflow_loads():
    result = run("import labkit, tensorflow as tf; print(tf.keras.__name__)", TF_USE_LEGACY_KERAS="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras"), result.stdout


def test_late_import_warns():
    result = run("import tensorflow, labkit")
    assert "TensorFlow was imported before labkit" in result.stderr

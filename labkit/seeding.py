"""One call that seeds every random generator a lab uses, reproducibly on every supported Python.

``tf.keras.utils.set_random_seed`` is avoided on purpose: in tf-keras 2.18 it installs a seed generator whose
``randint(1, 1e9)`` passes a float, which Python 3.12's ``random`` refuses ("'float' object cannot be interpreted
as an integer") the first time a layer is built. Without that generator tf-keras draws its seeds from the global
``random`` module, which is seeded here, so the result is the same sequence on 3.11 and 3.12.
A newer tf-keras fixes it but needs TensorFlow 2.19, which alibi-detect 0.13 excludes.
"""

from __future__ import annotations

import random
import sys

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and, if it is imported, TensorFlow.

    Call it after ``import tensorflow`` (the labs import labkit first, then TensorFlow, then seed).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, not {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.random.set_seed(seed)
        _forget_keras_seed_generator()


def _forget_keras_seed_generator() -> None:
    """Undo an earlier ``tf.keras.utils.set_random_seed`` in this process, whose generator breaks on 3.12."""
    backend = sys.modules.get("tf_keras.src.backend")
    generator_holder = getattr(backend, "_SEED_GENERATOR", None)
    if generator_holder is not None and getattr(generator_holder, "generator", None) is not None:
        generator_holder.generator = None

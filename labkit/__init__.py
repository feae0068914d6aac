"""labkit: the helper package of Last Mile Lab.

Importing it sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow can be imported:
alibi-detect 0.13 saves and loads its Keras detectors only in legacy mode.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
if "tensorflow" in sys.modules and not os.environ.get("LABKIT_QUIET"):
    print(
        "labkit: TensorFlow was imported before labkit; restart the kernel and import labkit "
        "first, or Keras detectors may fail to save or load.",
        file=sys.stderr,
    )

from labkit import course  # noqa: E402
from labkit.checks import Feedback, check, hint  # noqa: E402
from labkit.seeding import seed_everything  # noqa: E402


def _jupyter_labextension_paths():
    """Where the prebuilt sidebar lives (``jupyter labextension develop`` links it for ``pip install -e``)."""
    from labkit.jupyter import _jupyter_labextension_paths as paths

    return paths()


def load_ipython_extension(ipython):
    """``%load_ext labkit``: the ``%mlserver`` and ``%%model_settings`` magics."""
    from labkit.jupyter import load_ipython_extension as load

    load(ipython)


__all__ = ["Feedback", "check", "course", "hint", "seed_everything"]
__version__ = "0.1.0"

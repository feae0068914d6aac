"""Everything is in pyproject.toml; this file only stops an install on an unsupported Python
with one plain sentence, before pip's resolver would print a page of conflicts."""

import sys

from setuptools import setup

if not (3, 10) <= sys.version_info[:2] <= (3, 12):
    sys.exit(
        f"labkit needs Python 3.10, 3.11 or 3.12 (MLServer 1.7 and TensorFlow 2.18 support no other); "
        f"this is Python {sys.version.split()[0]}. Run `python3.11 tasks.py lab` with a supported Python."
    )

setup()

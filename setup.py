"""Everything is in pyproject.toml; this file only stops an install on an unsupported Python
with one plain sentence, before pip's resolver would print a page of conflicts."""

import re
import sys
from pathlib import Path

from setuptools import setup

# pyproject's requires-python is the one place that names the supported Pythons.
low, high = map(int, re.search(r'^requires-python = ">=3\.(\d+),<3\.(\d+)"',
                               (Path(__file__).parent / "pyproject.toml").read_text(), re.M).groups())
if not low <= sys.version_info[1] < high or sys.version_info[0] != 3:
    names = [f"3.{minor}" for minor in range(low, high)]
    sys.exit(
        f"labkit needs Python {', '.join(names[:-1])} or {names[-1]} (MLServer 1.7 and TensorFlow 2.18 support no "
        f"other); this is Python {sys.version.split()[0]}. Install Python {names[-1]} and run "
        f"`python{names[-1]} tasks.py lab`."
    )

setup()

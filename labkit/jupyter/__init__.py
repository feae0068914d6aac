"""The Jupyter parts of labkit: IPython magics, a server extension and the "Last Mile Lab" sidebar.

- ``%load_ext labkit`` loads the magics (``labkit.jupyter.magics``).
- The server extension ``labkit.jupyter`` (enabled by the file that the package installs into
  ``etc/jupyter/jupyter_server_config.d``) serves the sidebar's API (``labkit.jupyter.handlers``).
- The sidebar is a prebuilt JupyterLab extension: its source is in ``extension/`` of the
  repository, its built assets in ``labkit/jupyter/labextension``, installed into
  ``share/jupyter/labextensions/labkit``, so no Node.js is needed to use it.

This module imports nothing heavy: ``labkit.checks`` imports ``progress`` on every kernel start.
"""

from pathlib import Path

LABEXTENSION = Path(__file__).parent / "labextension"


def _jupyter_server_extension_points():
    return [{"module": "labkit.jupyter"}]


def _load_jupyter_server_extension(serverapp):
    from labkit.jupyter.handlers import load_jupyter_server_extension

    load_jupyter_server_extension(serverapp)


def _jupyter_labextension_paths():
    return [{"src": str(LABEXTENSION), "dest": "labkit"}]


def load_ipython_extension(ipython):
    from labkit.jupyter.magics import load_ipython_extension as load

    load(ipython)

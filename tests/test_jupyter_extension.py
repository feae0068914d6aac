"""The prebuilt sidebar and the server extension: built from the committed source, found by Jupyter."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "labkit" / "jupyter" / "labextension"
BIN = Path(sys.executable).parent


def test_built_assets_match_the_committed_source():
    spec = importlib.util.spec_from_file_location("build", ROOT / "extension" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert (ASSETS / "source.sha256").read_text().strip() == build.source_hash(), (
        "extension/ changed since labkit/jupyter/labextension was built: run .venv/bin/python extension/build.py "
        "and commit the assets"
    )
    meta = json.loads((ASSETS / "package.json").read_text())
    assert (ASSETS / meta["jupyterlab"]["_build"]["load"]).is_file()


def jupyter(*args: str) -> str:
    done = subprocess.run([str(BIN / "jupyter"), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, NO_COLOR="1"))
    return done.stdout + done.stderr


def test_jupyterlab_finds_the_prebuilt_sidebar():
    listing = jupyter("labextension", "list")
    line = next((line for line in listing.splitlines() if line.strip().startswith("labkit v")), "")
    assert "enabled" in line and "OK" in line, listing


def test_server_extension_is_enabled():
    listing = jupyter("server", "extension", "list")
    assert "labkit.jupyter enabled" in " ".join(listing.replace("\x1b[32m", "").replace("\x1b[0m", "").split())
    assert "labkit.jupyter  OK" in listing.replace("\x1b[32m", "").replace("\x1b[0m", ""), listing


@pytest.mark.skipif(os.environ.get("LABKIT_SKIP_WHEEL_TEST") == "1", reason="LABKIT_SKIP_WHEEL_TEST=1")
def test_the_wheel_ships_the_built_sidebar_and_enables_the_server_extension(tmp_path):
    """A student's `pip install labkit` gets the assets where JupyterLab looks: no Node.js needed."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No matching distribution" in build.stderr:
        pytest.skip("building the wheel needs setuptools from the package index, which is not reachable")
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("labkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "labkit-0.1.0.data/data/"
    assert data + "etc/jupyter/jupyter_server_config.d/labkit.json" in names
    built = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file() and p.name != "source.sha256"}
    shipped = {n[len(data + "share/jupyter/labextensions/labkit/"):] for n in names
               if n.startswith(data + "share/jupyter/labextensions/labkit/")}
    assert built == shipped
    config = json.loads(zipfile.ZipFile(wheel).read(data + "etc/jupyter/jupyter_server_config.d/labkit.json"))
    assert config == {"ServerApp": {"jpserver_extensions": {"labkit.jupyter": True}}}
    overrides = json.loads(zipfile.ZipFile(wheel).read(data + "share/jupyter/lab/settings/overrides.d/labkit.json"))
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"

"""binder/: the environment Binder builds must be the tested one."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def pins(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_binder_requirements_are_the_constraints():
    binder, constraints = pins(BINDER / "requirements.txt"), pins(ROOT / "constraints.txt")
    missing = sorted(set(constraints) - set(binder))
    extra = sorted(set(binder) - set(constraints))
    assert not missing and not extra, (
        f"binder/requirements.txt disagrees with constraints.txt: missing {missing}, not in constraints {extra}. "
        "Copy the pins of constraints.txt into it (see its header)."
    )
    names = {re.split(r"[=<>; ]", pin, maxsplit=1)[0].lower().replace("_", "-") for pin in binder}
    assert {"jupyter-server-proxy", "jupyterlab", "mlserver", "tensorflow"} <= names


def test_binder_python_is_one_the_course_supports():
    assert (BINDER / "runtime.txt").read_text().strip() in {"python-3.11", "python-3.12"}
    assert not (BINDER / "environment.yml").exists()  # it would make Binder ignore runtime.txt


def test_post_build_installs_labkit_and_checks_the_extensions():
    script = BINDER / "postBuild"
    lines = [line for line in script.read_text().splitlines() if line and not line.startswith("#")]
    assert os.access(script, os.X_OK)
    assert lines[0] == "set -e"
    assert any(line.startswith("pip install") and line.endswith(" .") for line in lines)
    assert any("labextension list" in line and "labkit" in line for line in lines)
    assert any("server extension list" in line and "labkit.jupyter" in line for line in lines)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_start_sets_legacy_keras_and_execs_the_command(tmp_path):
    script = BINDER / "start"
    assert os.access(script, os.X_OK)
    assert script.read_text().rstrip().endswith('exec "$@"')
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([str(script), "sh", "-c", 'echo "$TF_USE_LEGACY_KERAS $$"'], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "1"


def test_readme_binder_badge_opens_the_welcome_lab():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"\(https://mybinder\.org/v2/gh/[^/\s]+/[^/\s]+/[^?\s]+\?urlpath=lab/tree/([^)\s]+)\)", readme)
    assert match, "README needs a Binder badge linking to mybinder.org/v2/gh/OWNER/REPO/BRANCH?urlpath=lab/tree/..."
    assert match.group(1) == "labs/00_welcome.ipynb"
    assert (ROOT / match.group(1)).exists()
    assert "https://mybinder.org/badge_logo.svg" in readme


def test_start_points_labkit_at_the_course(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_COURSE"}
    out = subprocess.run([str(BINDER / "start"), "sh", "-c", 'echo "$LABKIT_COURSE"'], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == ROOT
    assert (Path(out) / "datasets" / "SHA256SUMS").is_file()

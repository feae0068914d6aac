"""The welcome lab in a real browser: Debian's Chromium driven by Playwright, against a real JupyterLab.

Runs all cells of labs/00_welcome.ipynb (with the exercise solved and a lab server started by
the %mlserver magic), then checks what the student sees: the check's feedback, the
"Last Mile Lab" sidebar marking the exercise passed, and the server listed there and
stopped from there. Screenshots go to test-artifacts/browser/.
"""

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from conftest import wait_gone
from running_lab import ROOT, jupyterlab

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# As root in a container, without a GPU or a network beyond loopback (see DESIGN, "Browser tests").
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (python3 tasks.py test installs it when run as root: "
                "apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def lab_root(tmp_path, sklearn_repo):
    """A copy of labs/ in which 00_welcome is solved and ends by starting a lab server."""
    root = tmp_path / "course"
    (root / "labs").mkdir(parents=True)
    for notebook in (ROOT / "labs").glob("[0-9][0-9]_*.ipynb"):
        shutil.copy(notebook, root / "labs" / notebook.name)
    welcome = json.loads((ROOT / "labs" / "solutions" / "00_welcome.ipynb").read_text())
    welcome["cells"].append({
        "cell_type": "code", "execution_count": None, "id": "browser-test", "metadata": {}, "outputs": [],
        "source": ["%load_ext labkit\n", f"server = %mlserver start {sklearn_repo} --workers 0"],
    })
    (root / "labs" / "00_welcome.ipynb").write_text(json.dumps(welcome))
    return root


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_welcome_lab_in_chromium(lab_root, tmp_path):
    with jupyterlab(lab_root, tmp_path / "home") as lab, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{lab.url}lab/tree/labs/00_welcome.ipynb?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # the check's feedback rendered as HTML, and the last cell started a server
            feedback = page.locator(".labkit-feedback").first
            feedback.wait_for(timeout=120_000)
            assert "Passed" in feedback.inner_text() and "00.error_rate" in feedback.inner_text()
            page.get_by_text("MLServer ready: REST").wait_for(timeout=120_000)
            assert page.get_by_text("Error displaying widget").count() == 0
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")\
                .filter(has_text="Traceback").count() == 0
            shot(page, "01-notebook-run")

            # the sidebar: the exercise passed, the server listed with its health
            page.locator("[data-id='labkit-sidebar']").click()
            passed = page.locator("li[data-exercise='00.error_rate'][data-status='passed']")
            passed.wait_for()
            labs = page.locator(".labkit-lab")
            assert labs.count() == len(list((lab_root / "labs").glob("[0-9][0-9]_*.ipynb")))
            servers = httpx.get(lab.api("servers"), headers=lab.auth, timeout=30).json()["servers"]
            # Other servers of this user may run (other sessions); doctor()'s own one is stopped again.
            ours = [s for s in servers if s["notebook"] == "labs/00_welcome.ipynb"]
            assert len(ours) == 1, servers
            port = ours[0]["http_port"]
            card = page.locator(f".labkit-server[data-port='{port}']")
            card.wait_for()
            page.wait_for_function(
                f"() => document.querySelector(\".labkit-server[data-port='{port}'] .labkit-ready\")")
            assert "cancer" in card.inner_text()
            assert "00_welcome.ipynb" in card.inner_text()  # it says which notebook started it
            shot(page, "02-sidebar-passed-and-server")

            # stop it from the sidebar: it disappears, and its processes end
            import psutil

            supervisor = psutil.Process(ours[0]["id"])
            mlserver = [c.pid for c in supervisor.children(recursive=True)]
            card.locator("button.labkit-stop").click()
            card.wait_for(state="detached")
            assert wait_gone(mlserver) == []
            left = httpx.get(lab.api("servers"), headers=lab.auth, timeout=30).json()["servers"]
            assert ours[0]["id"] not in {s["id"] for s in left}
            shot(page, "03-server-stopped")

            # the Open button opens a lab
            page.locator(".labkit-lab[data-lab='01'] button.labkit-open").click()
            page.locator(".jp-DocumentWidget[title*='01_serve_a_model']").or_(
                page.locator(".lm-TabBar-tab[title*='01_serve_a_model']")).first.wait_for()
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()
            time.sleep(0.2)


NEWS_QUESTION = "Would you like to get notified about official Jupyter news?"


@pytest.mark.parametrize("course_settings", [True, False], ids=["course settings", "without them"])
def test_no_news_pop_up_greets_a_new_user(tmp_path, course_settings):
    """The course's JupyterLab settings (jupyter-config/overrides.d) turn JupyterLab's news question off; without
    them (an empty settings folder) the same JupyterLab asks it, so this test can tell the difference."""
    root = tmp_path / "course"
    root.mkdir()
    extra = () if course_settings else (f"--LabApp.app_settings_dir={tmp_path / 'no-settings'}",)
    with jupyterlab(root, tmp_path / "home", extra_args=extra) as lab, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{lab.url}lab?token={lab.token}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
            page.locator("[data-id='labkit-sidebar']").wait_for()  # the app has restored its layout
            question = page.get_by_text(NEWS_QUESTION)
            if course_settings:
                page.wait_for_timeout(3000)  # the question comes right after the restore, when it comes
                assert question.count() == 0
            else:
                question.wait_for(timeout=30_000)
        finally:
            browser.close()
            time.sleep(0.2)

"""The three UIs of a finished run as a user opens them: servers on 127.0.0.1, pages in headless Chromium.

Shared by tests/e2e/test_browser.py (asserts what the pages show) and workflow/scripts/screenshots.py
(saves them as the README's figures): one way of starting each UI and of waiting for its page.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmgh.io import atomic_write
from tests.helpers import free_port as free_port  # re-exported: screenshots.py and test_browser.py call browser.free_port

BIN = Path(sys.executable).parent
WINDOW = (1400, 900)
SCREENSHOTS = ("mlflow_runs.png", "mlflow_run.png", "optuna_study.png", "optuna_trials.png", "report_landing.png", "report_figure.png")
TIMEOUT = 90.0  # page and server waits; MLflow's server takes ~35 s to start on 2 loaded cores


def missing_browser() -> str | None:
    """Why the browser pages cannot be opened here, or None."""
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH (apt-get install chromium chromium-driver; .ci/run does it as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


def mlflow_ui(cfg: object, port: int) -> tuple[list[str], str]:
    """What `cmgh browse` prints for ``cfg``: the `mlflow ui` command (one worker: it starts faster
    and serves one browser) and the link to the experiment's runs table."""
    from cmgh.track.ui import browse

    command, link = browse(cfg, port)
    return [*shlex.split(command), "--workers", "1"], link


def dashboard_command(printed: str, port: int) -> list[str]:
    """What `cmgh sweep` prints (``cmgh.sweep.dashboard_command``), on a chosen port, from this venv."""
    argv = shlex.split(printed)
    return [str(BIN / argv[0]), *argv[1:], "--port", str(port)]


@dataclass
class Server:
    """A UI server started as a user starts it; ``url`` answers once ``wait`` returns."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url}: server exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise TimeoutError(f"{self.url}: no answer in {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(cmd: list[str], port: int, log: Path) -> Server:
    """Start ``cmd`` in its own process group (its workers die with it); returns at once: call ``wait``."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(process, f"http://127.0.0.1:{port}/", log)


@contextmanager
def chromium() -> Iterator[object]:
    """Headless Debian Chromium through its chromedriver, at the screenshots' window size."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, quoted when a page never renders
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver, what: str, ready: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
    """The page's text once ``ready(text)`` holds; the error names ``what`` and shows the text seen."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: ready(body_text(d)))
    except TimeoutException:
        console = "\n".join(entry["message"][:300] for entry in driver.get_log("browser") if entry["level"] == "SEVERE")
        raise AssertionError(f"{driver.current_url}: no {what} after {timeout:.0f} s; the page shows:\n{body_text(driver)[:2000]}\n"
                             f"console errors:\n{console}") from None
    return body_text(driver)


def open_page(driver, url: str, what: str, ready: Callable[[str], bool], crashed: str | None = None) -> str:
    """``url``'s text once ready. A single-page app that shows its ``crashed`` message (MLflow's UI does when a
    script chunk fails to load on a loaded machine) is reloaded once; a second crash fails with the console."""
    driver.get(url)
    if crashed is None:
        return wait_for(driver, what, ready)
    text = wait_for(driver, what, lambda text: ready(text) or crashed in text)
    if ready(text):
        return text
    driver.refresh()
    return wait_for(driver, what, ready)


def link_to(driver, text: str, href_part: str, matches: Callable[[str], bool] | None = None) -> str:
    """The href of the first link whose text is ``text`` (or ``matches``) and whose href contains ``href_part``."""
    from selenium.webdriver.common.by import By

    for link in driver.find_elements(By.CSS_SELECTOR, f"a[href*='{href_part}']"):
        label = link.text.strip()
        if (matches(label) if matches and label else label == text):
            return link.get_attribute("href")
    raise AssertionError(f"{driver.current_url}: no link {text!r} to *{href_part}*")


def screenshot(driver, folder: Path | None, name: str) -> None:
    if folder is not None:
        png = driver.get_screenshot_as_png()
        atomic_write(folder / name, lambda f: f.write(png))


def close_assistant(driver) -> None:
    """MLflow 3's assistant panel opens itself on a first visit and covers a third of the page: close it."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()


def mlflow_pages(driver, url: str, runs_link: str, experiment: str, run_name: str, metric: str,
                 shots: Path | None = None) -> dict[str, str]:
    """The experiment list, the runs table `cmgh browse` links to and ``run_name``'s page, once each
    shows what it is for; their texts by page."""
    crashed = "Something went wrong"
    pages = {"experiments": open_page(driver, f"{url}#/experiments", f"experiment {experiment!r}", lambda text: experiment in text.splitlines(), crashed)}
    pages["runs"] = open_page(driver, runs_link, f"run {run_name!r} in the runs table", lambda text: run_name in text, crashed)
    close_assistant(driver)
    screenshot(driver, shots, "mlflow_runs.png")
    from cmgh.track.ui import WORKFLOW

    run_link = link_to(driver, run_name, "/runs/")
    run_link += ("&" if "?" in run_link else "?") + WORKFLOW if WORKFLOW not in run_link else ""
    pages["run"] = open_page(driver, run_link, f"metric {metric!r} on the run's page",
                             lambda text: run_name in text and metric in text.splitlines(), crashed)
    close_assistant(driver)
    screenshot(driver, shots, "mlflow_run.png")
    return pages


def dashboard_pages(driver, url: str, study: str, n_trials: int, shots: Path | None = None) -> dict[str, str]:
    """optuna-dashboard's study list, the study's page and its trial list; their texts by page."""
    driver.get(f"{url}dashboard")
    pages = {"studies": wait_for(driver, f"study {study!r}", lambda text: any(line.endswith(f". {study}") for line in text.splitlines()))}
    study_url = link_to(driver, study, "/studies/", lambda text: text.splitlines()[0].endswith(f". {study}"))
    driver.get(study_url)
    pages["study"] = wait_for(driver, "the optimization history", lambda text: "History" in text and "Best Trial" in text)
    screenshot(driver, shots, "optuna_study.png")
    driver.get(f"{study_url}/trials")
    pages["trials"] = wait_for(driver, f"{n_trials} trials", lambda text: f"{n_trials} Trials" in text.splitlines())
    screenshot(driver, shots, "optuna_trials.png")
    return pages


def report_file(driver, name: str) -> object:
    """The eye button of ``name``'s row in a category of Snakemake's report (its view link)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.XPATH, f"//tr[td[substring(normalize-space(text()), string-length(normalize-space(text())) - {len(name) - 1}) = '{name}']]")
    assert rows, f"{driver.current_url}: no row {name!r}"
    return rows[0].find_element(By.CSS_SELECTOR, "a[iconname='eye']")


def report_pages(driver, url: str, title: str, table: str, figure: str, shots: Path | None = None) -> dict[str, Any]:
    """Snakemake's report: its front page (``title`` and the headline table `cmgh report` wrote: its rows'
    cells under ``landing``), the Tables category with ``table`` (an HTML page, shown in the report: its
    file under ``table``, its text as shown under ``table shown``) and ``figure`` shown in the page."""
    import base64

    from selenium.webdriver.common.by import By

    driver.get(url)
    pages: dict[str, Any] = {"home": wait_for(driver, "the report's front page with its headline table", lambda text: title in text.splitlines()
                                              and bool(driver.find_elements(By.CSS_SELECTOR, "#cmgh-landing tbody tr")))}
    pages["landing"] = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                        for row in driver.find_elements(By.CSS_SELECTOR, "#cmgh-landing tbody tr")]
    screenshot(driver, shots, "report_landing.png")
    driver.find_element(By.LINK_TEXT, "Tables").click()
    pages["tables"] = wait_for(driver, f"table {table!r}", lambda text: any(line.endswith(table) for line in text.splitlines()))
    report_file(driver, table).click()
    frame = f"iframe[src*='filename={table};']"
    wait_for(driver, f"table {table!r} shown", lambda _: bool(driver.find_elements(By.CSS_SELECTOR, frame)))
    shown = driver.find_element(By.CSS_SELECTOR, frame)
    pages[table] = base64.b64decode(shown.get_attribute("src").split(";base64,", 1)[1]).decode("utf-8")
    driver.switch_to.frame(shown)
    pages[f"{table} shown"] = wait_for(driver, f"the rows of {table!r}", lambda text: bool(text.strip()))
    driver.switch_to.default_content()
    driver.find_element(By.LINK_TEXT, "Results").click()
    wait_for(driver, "the report's categories", lambda text: "Figures" in text.splitlines())
    driver.find_element(By.LINK_TEXT, "Figures").click()
    wait_for(driver, f"figure {figure!r}", lambda text: any(line.endswith(figure) for line in text.splitlines()))
    report_file(driver, figure).click()
    shown = f"img[src*='filename={figure};']"
    wait_for(driver, f"figure {figure!r} shown", lambda _: bool(driver.find_elements(By.CSS_SELECTOR, shown)))
    pages["figure"] = driver.find_element(By.CSS_SELECTOR, shown).get_attribute("src")
    screenshot(driver, shots, "report_figure.png")
    return pages

"""The page at / in a real headless browser (Debian's chromium driven by Playwright): upload a real
AV-MNIST image and audio file, submit, read the predicted digit and the explanation off the page, and
compare with Predictor.predict. `make test` installs chromium when it can (scripts/ensure-browser.sh)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import polyfuse
from polyfuse.explain import column_name
from polyfuse.serve.app import create_app
from test_serve import serving  # tests/ is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

#: Flags for a sandbox with a closed network (no background connections, no first-run work).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def chromium_or_skip() -> str:
    found = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found is None:
        pytest.skip("no chromium on this machine: `make test` installs it where it can (scripts/ensure-browser.sh)")
    return found


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A new page in headless chromium (skips where there is no browser or no playwright)."""
    executable = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make test` (extra: browser)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_page_is_served_and_lists_the_model_fields(run: Path) -> None:
    client = TestClient(create_app(run))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "predict?explain=true" in page.text and "metadata" in page.text
    fields = {f["name"]: f["role"] for i in client.get("/metadata").json()["inputs"] for f in i["fields"]}
    assert fields == {"audio": "file", "image": "file"}


def test_page_predicts_an_uploaded_row_in_a_browser(run: Path, avmnist, tmp_path: Path) -> None:
    row = pd.read_csv(avmnist.test).iloc[3]
    files = {column: avmnist.root / row[column] for column in ("audio", "image")}
    expected = polyfuse.load(run).predict(pd.DataFrame([row[["audio", "image"]]]), root=avmnist.root, explain=True)
    with serving(create_app(run)) as url, browser_page() as page:
        page.goto(url + "/")
        page.wait_for_selector("form[data-state=ready]", timeout=30_000)
        for column, path in files.items():
            page.set_input_files(f"#field-{column}", str(path))
        page.click("#submit")
        page.wait_for_selector("#result[data-state=done]", timeout=30_000)
        task = page.locator("section[data-task=digit]")
        shown = task.locator("[data-role=label]").inner_text()
        probabilities = {
            bar.get_attribute("data-name"): float(bar.locator(".value").inner_text())
            for bar in task.locator("[data-role=probabilities] .bar").all()
        }
        contributions = {
            bar.get_attribute("data-name"): float(bar.locator(".value").inner_text())
            for bar in task.locator("[data-role=explanation] .bar").all()
        }
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert shown == str(expected["digit"].iloc[0])
    classes = polyfuse.load(run).classes("digit")
    assert set(probabilities) == {str(c) for c in classes}
    for c in classes:
        assert probabilities[str(c)] == pytest.approx(expected[f"digit:p:{c}"].iloc[0], abs=1e-3)  # shown to 3 places
    for name in ("audio", "image"):
        assert contributions[name] == pytest.approx(expected[column_name("digit", name)].iloc[0], abs=1e-3)
    assert (tmp_path / "page.png").stat().st_size > 5_000


def test_page_shows_the_server_refusing_a_file_over_the_limit(run: Path, avmnist) -> None:
    row = pd.read_csv(avmnist.test).iloc[0]
    audio = avmnist.root / row["audio"]
    limit_mb = audio.stat().st_size / 2 / 1024 / 1024  # the sound file is twice the per-file limit
    with serving(create_app(run, max_file_mb=limit_mb)) as url, browser_page() as page:
        page.goto(url + "/")
        page.wait_for_selector("form[data-state=ready]", timeout=30_000)
        page.set_input_files("#field-audio", str(audio))
        page.click("#submit")
        page.wait_for_selector("#result[data-state=error]", state="attached", timeout=30_000)
        message = page.locator("#error").inner_text()
    assert message.startswith("413") and "audio" in message

"""`GET /public/api/v1/{service}/docs` in headless Chromium (Debian's chromium, driven by
selenium through chromedriver): Swagger UI, served by the node itself, renders the
service's document and its try-it form plays a test query against the node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.inproc import InProcNode, run_node
from tests.node.fraudpkg import build_fraud

FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update --no-first-run"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcNode]:
    tmp = tmp_path_factory.mktemp("docs")
    with run_node(tmp / "data", build_fraud(tmp)) as n:
        yield n


def test_the_page_and_its_assets_come_from_the_node(node: InProcNode) -> None:
    page = requests.get(node.http + "/public/api/v1/fraud/docs", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f'"/apinode/static/swagger-ui/{asset}"' in page.text
        r = requests.get(node.http + f"/apinode/static/swagger-ui/{asset}", timeout=30)
        assert r.status_code == 200 and len(r.content) > 100_000
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere


def _chromium() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in FLAGS.split():
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _try_score(driver: webdriver.Chrome) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Opens the score endpoint's try-it form, plays its prefilled test query; returns what
    was sent, the status shown and the answer shown."""
    wait = WebDriverWait(driver, 90)
    op = "#operations-score-score_predict"
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, op + " .opblock-summary"))).click()
    body = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, op + " textarea.body-param__text")))
    sent = json.loads(body.get_attribute("value") or "")
    driver.find_element(By.CSS_SELECTOR, op + " .execute").click()
    answer = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, op + " .live-responses-table .response-col_description pre"))
    )
    status = driver.find_element(By.CSS_SELECTOR, op + " .live-responses-table tbody .response-col_status").text
    return sent, status.strip(), json.loads(answer.text)


def test_the_try_it_form_answers_a_test_query_in_chromium(node: InProcNode) -> None:
    driver = _chromium()
    try:
        driver.get(node.http + "/public/api/v1/fraud/docs")
        sent, status, got = _try_score(driver)
    finally:
        driver.quit()
    assert sent["features"]["customer_id"] == "C00000"  # the first test query, prefilled
    assert status == "200"
    direct = requests.post(node.url("fraud", "score", "predict"), json=sent, timeout=30).json()
    assert got["result"]["prediction"] == direct["result"]["prediction"] in ("FRAUD", "OK")
    assert got["result"]["probas"] == direct["result"]["probas"]
    assert got["apiContext"] == {"serviceId": "fraud", "endpointId": "score", "serviceGeneration": "v1"}


def test_a_keyed_service_page_asks_for_the_key_and_sends_it(node: InProcNode) -> None:
    keys = node.data_dir / "config" / "services" / "fraud" / "api_keys.json"
    keys.parent.mkdir(parents=True, exist_ok=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "docs", "key": "docs-key-1"}]}))
    driver = _chromium()
    try:
        url = node.url("fraud", "score", "predict")
        node.wait_for(lambda: requests.post(url, json={}, timeout=10).status_code == 401, what="keys")
        driver.get(node.http + "/public/api/v1/fraud/docs")
        wait = WebDriverWait(driver, 90)
        wait.until(ec.presence_of_element_located((By.ID, "key"))).send_keys("docs-key-1")
        assert "customer_id" not in driver.page_source  # nothing of the model before the key
        driver.find_element(By.CSS_SELECTOR, "#apikey button").click()
        sent, status, got = _try_score(driver)
    finally:
        driver.quit()
        keys.unlink()
    assert sent["features"]["customer_id"] == "C00000"
    assert status == "200", got  # the try-it call carried the key
    assert got["apiContext"]["serviceId"] == "fraud"

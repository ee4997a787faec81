"""`GET /public/api/v1/{service}/docs` in headless Chromium (Debian's chromium, driven by
selenium through chromedriver): Swagger UI, served by the node itself, renders the
service's document and its try-it form plays a test query against the node."""

from __future__ import annotations

import json
from collections.abc import Iterator

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


def test_the_try_it_form_answers_a_test_query_in_chromium(node: InProcNode) -> None:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in FLAGS.split():
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(node.http + "/public/api/v1/fraud/docs")
        wait = WebDriverWait(driver, 90)
        op = "#operations-score-score_predict"
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, op + " .opblock-summary"))).click()
        body = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, op + " textarea.body-param__text")))
        sent = json.loads(body.get_attribute("value") or "")
        assert sent["features"]["customer_id"] == "C00000"  # the first test query, prefilled
        driver.find_element(By.CSS_SELECTOR, op + " .execute").click()
        answer = wait.until(
            ec.presence_of_element_located(
                (By.CSS_SELECTOR, op + " .live-responses-table .response-col_description pre")
            )
        )
        status = driver.find_element(By.CSS_SELECTOR, op + " .live-responses-table tbody .response-col_status").text
        got = json.loads(answer.text)
    finally:
        driver.quit()
    assert status.strip() == "200"
    direct = requests.post(node.url("fraud", "score", "predict"), json=sent, timeout=30).json()
    assert got["result"]["prediction"] == direct["result"]["prediction"] in ("FRAUD", "OK")
    assert got["result"]["probas"] == direct["result"]["probas"]
    assert got["apiContext"] == {"serviceId": "fraud", "endpointId": "score", "serviceGeneration": "v1"}

"""`sentiment serve` as a user starts it: a real server process on 127.0.0.1 and a free port, every
endpoint called over HTTP, bad requests included, and the page driven in a headless browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_helpers import WORDS, jsonl, run_cli, three_class_csv

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sentiment.cli import main

    root = tmp_path_factory.mktemp("serve")
    csv = three_class_csv(root / "three.csv", n=240)
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "textcnn", "--tokenizer", "words", "--data", str(csv), "--epochs", "3",
              "--out", str(root / "runs"), "--quiet"])  # fmt: skip
    assert e.value.code == 0
    return root / "runs" / "latest"


@pytest.fixture(scope="module")
def server(run):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "serve", "--run", str(run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 60
    while True:
        try:
            if request(port, "GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start: {proc.stdout.read()}")
        time.sleep(0.2)
    yield port, proc
    proc.terminate()
    proc.wait(timeout=30)


def request(port: int, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None):
    """(status, parsed JSON or text) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    except (BrokenPipeError, ConnectionResetError):  # the server answered before reading it all
        pass
    response = conn.getresponse()
    payload = response.read().decode()
    conn.close()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(payload) if kind.startswith("application/json") else payload


def reviews(n: int) -> list[str]:
    import random

    rng = random.Random(1)
    words = [w for ws in WORDS.values() for w in ws] + ["the", "film", "was", "and", "it"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(n)]


def test_health_names_the_run_and_its_classes(server, run):
    status, body = request(server[0], "GET", "/health")
    assert status == 200
    assert body["run"] == run.resolve().name and body["model"] == "textcnn"
    assert body["classes"] == ["bad", "good", "meh"]


def test_concurrent_requests_are_batched_and_answer_as_predict_does(server, run, tmp_path, capsys):
    port = server[0]
    texts = reviews(300)
    before = request(port, "GET", "/health")[1]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: request(port, "POST", "/predict", {"texts": [t]}), texts))
    after = request(port, "GET", "/health")[1]
    assert all(status == 200 for status, _ in answers)
    batches = after["batches"] - before["batches"]
    assert after["texts"] - before["texts"] == 300 and batches < 300  # several texts went in one batch

    file = tmp_path / "reviews.txt"
    file.write_text("\n".join(texts))
    code, out, err = run_cli(capsys, "predict", "--run", run, "--file", file, "--json")
    assert code == 0, err
    for (_, got), want in zip(answers, jsonl(out), strict=True):
        got = got["predictions"][0]
        assert got["label"] == want["label"]
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)

    status, body = request(port, "POST", "/predict", {"texts": texts[:5]})  # several texts in one request
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == [w["label"] for w in jsonl(out)[:5]]


def test_explain_endpoint_gives_contributions_that_add_up(server):
    text = "superb and wonderful, but the chair was awful"
    status, body = request(server[0], "POST", "/explain", {"text": text})
    assert status == 200, body
    assert [text[t["start"] : t["end"]] for t in body["tokens"]][:3] == ["superb", "and", "wonderful"]
    total = sum(t["contribution"] for t in body["tokens"]) + body["bias"]
    assert total == pytest.approx(body["margin"], abs=1e-6)


BAD = [
    ("not JSON", "/predict", {"raw": b"texts=great"}, 400, "not valid JSON"),
    ("wrong type", "/predict", {"body": {"texts": [1, 2]}}, 422, "valid string"),
    ("not a list", "/predict", {"body": {"texts": "great"}}, 422, "valid list"),
    ("no field", "/predict", {"body": {"text": ["great"]}}, 422, "texts"),
    ("empty list", "/predict", {"body": {"texts": []}}, 422, "at least one"),
    ("10,000 texts", "/predict", {"body": {"texts": ["great"] * 10_000}}, 422, "at most 1,000"),
    ("10 MB body", "/predict", {"raw": b'{"texts": ["' + b"a" * 10_000_000 + b'"]}'}, 413, "over"),
    ("empty text", "/predict", {"body": {"texts": ["great", "  "]}}, 422, "texts.1: the text is empty"),
    ("no text", "/predict", {"body": {"texts": [""]}}, 422, "empty"),
    ("long text", "/predict", {"body": {"texts": ["a" * 200_001]}}, 422, "over 200,000 characters"),
    ("explain a list", "/explain", {"body": {"text": ["great"]}}, 422, "valid string"),
    ("explain nothing", "/explain", {"body": {"text": "\n\t"}}, 422, "empty"),
]


def test_texts_of_unknown_words_are_answered_and_flagged(server):
    port = server[0]
    got, body = request(port, "POST", "/predict", {"texts": ["great", "zxqv qqzx"]})
    assert got == 200, body
    assert [p["no_known_words"] for p in body["predictions"]] == [False, True]
    got, body = request(port, "POST", "/explain", {"text": "zxqv"})
    assert got == 200 and body["no_known_words"] is True, body


@pytest.mark.parametrize("case, path, what, status, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_json_error_and_the_server_goes_on(server, case, path, what, status, needle):
    port = server[0]
    got, body = request(port, "POST", path, what.get("body"), raw=what.get("raw"))
    assert got == status, body
    assert isinstance(body, dict) and needle in body["error"], body
    assert "\n" not in body["error"]
    assert request(port, "POST", "/predict", {"texts": ["superb"]})[0] == 200
    assert server[1].poll() is None


def test_a_chunked_body_over_the_limit_gets_413(server):
    port = server[0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()

    def chunked(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    try:
        conn.send(chunked(b'{"texts": ["'))
        for _ in range(6):  # 6 MB in 1 MB chunks, no Content-Length
            conn.send(chunked(b"a" * (1 << 20)))
        conn.send(chunked(b'"]}') + b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    assert response.status == 413
    assert "over" in json.loads(response.read())["error"]
    conn.close()
    assert request(port, "POST", "/predict", {"texts": ["superb"]})[0] == 200


def test_docs_page_and_loopback_only(server):
    port, proc = server
    status, spec = request(port, "GET", "/openapi.json")
    assert status == 200 and {"/predict", "/explain", "/health"} <= set(spec["paths"])
    status, docs = request(port, "GET", "/docs")
    assert status == 200 and "swagger" in docs.lower()
    status, page = request(port, "GET", "/")
    assert status == 200 and "<textarea" in page and "/explain" in page
    listening = open("/proc/net/tcp").read().splitlines()[1:]
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # state LISTEN
    assert f"0100007F:{port:04X}" in local  # 127.0.0.1, not 0.0.0.0


def test_a_port_in_use_or_a_bad_host_is_one_line(server, run, capsys):
    from cli_helpers import assert_user_error

    code, _, err = run_cli(capsys, "serve", "--run", run, "--port", server[0])
    assert_user_error(code, err, f"port {server[0]}", "in use")
    code, _, err = run_cli(capsys, "serve", "--run", run, "--host", "no-such-host.invalid")
    assert_user_error(code, err, "no such address")


def test_a_device_the_server_cannot_use_is_one_line(run, capsys):
    """Refused before the server starts (with several workers, each would fail on its own)."""
    import torch

    from cli_helpers import assert_user_error

    code, _, err = run_cli(capsys, "serve", "--run", run, "--backend", "onnx", "--device", "cuda")
    assert_user_error(code, err, "--backend onnx runs on the CPU", "drop --device cuda")
    code, _, err = run_cli(capsys, "serve", "--run", run, "--device", "tpu")
    assert_user_error(code, err, "unknown device 'tpu'")
    if not torch.cuda.is_available():  # with a GPU, tests/test_cuda.py serves on it
        code, _, err = run_cli(capsys, "serve", "--run", run, "--device", "cuda", "--workers", "2")
        assert_user_error(code, err, "--device cuda was asked for", "no CUDA GPU")


def _browser():
    """Headless Chromium through Selenium, or a skip saying what is missing (a failure where CI
    promised them: SENTIMENT_BROWSER_TESTS=1)."""
    missing = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not os.path.exists(p)]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("SENTIMENT_BROWSER_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def test_the_page_in_a_real_browser(server, capsys, run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    review = "A superb \U0001f600 wonderful film; the chair was awful."  # offsets past an emoji too
    driver = _browser()
    try:
        driver.get(f"http://127.0.0.1:{server[0]}/")
        box = driver.find_element(By.ID, "text")
        box.send_keys("A superb ")  # typed; the emoji (outside what ChromeDriver can type) set by script
        driver.execute_script("arguments[0].value = arguments[1]", box, review)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "label")))
        label = driver.find_element(By.ID, "label").text
        probability = float(driver.find_element(By.ID, "probability").text)
        spans = driver.find_elements(By.CSS_SELECTOR, "#highlighted span.tok")
        words = [s.text for s in spans]
        contributions = [float(s.get_attribute("data-contribution")) for s in spans]
        shown = driver.find_element(By.ID, "highlighted").text
    finally:
        driver.quit()
    _, want = request(server[0], "POST", "/explain", {"text": review})
    assert label == want["label"] and probability == pytest.approx(want["probability"], abs=0.005)
    assert words == [review[t["start"] : t["end"]] for t in want["tokens"]]
    assert contributions == pytest.approx([t["contribution"] for t in want["tokens"]], rel=1e-6)
    assert shown == review  # the highlighted text is the review itself, emoji and all


SCHEMATHESIS_CONFIG = """
[checks.negative_data_rejection]
# the schema's own answers to a request it forbids: 413 is a body over the size limit
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
"""


def test_the_openapi_schema_states_what_the_server_enforces(server, tmp_path):
    """An independent fuzzer (schemathesis, every check) finds the server keeping to its schema:
    valid requests answered, invalid ones refused with a documented status, 405s with Allow."""
    pytest.importorskip("schemathesis")
    port = server[0]
    status, body = request(port, "TRACE", "/predict")
    assert status == 405 and body["error"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("DELETE", "/explain")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 405 and response.getheader("allow") == "POST"
    schema = request(port, "GET", "/openapi.json")[1]
    texts = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 1000, 200_000)
    assert {"413", "422", "400"} <= set(schema["paths"]["/predict"]["post"]["responses"])

    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"http://127.0.0.1:{port}/openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its example database stays there
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout

"""`sentiment serve` under load: N concurrent clients, each sending one real IMDb test review at a
time (`POST /predict` with one text) for a fixed time, against a server started as a user would.

    python -m benchmarks.serve --run RUN [--run RUN ...] [--backends torch,onnx-int8] [--clients 16]
        [--seconds 30] [--readme]

Each run is served with each backend asked for (`sentiment serve --backend`; the ONNX ones need
`sentiment export RUN --format onnx --quantize int8` first). Reports requests/s, latency
percentiles and how many answers differ from `sentiment predict --json` (same backend) of the same
reviews (label, and probability to 1e-6; how many labels differ and by how much the probabilities
do). The clients are one asyncio process speaking HTTP/1.1 over kept-alive connections with no HTTP
library, so they take little of the CPU they share
with the server. Writes benchmarks/results/serve.json and, with `--readme`, the table between the
docs/results.md's `bench-serve` markers (rows of other runs are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.accuracy import cpu_model
from benchmarks.readme import merge_results, replace_section
from sentiment.fsutil import split_lines

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
SCREENSHOT_REVIEW = "The plot was thin and the ending predictable, but the acting is superb and I loved every minute."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reviews(data: str, n: int, seed: int = 0) -> list[str]:
    from sentiment.text.imdb import read_imdb

    texts = [" ".join(ex.text.replace("\r", " ").split("\n")) for ex in read_imdb(data, "test")]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def predict_file(run: str, texts: list[str], backend: str = "torch", device: str = "cpu") -> list[dict]:
    """What `sentiment predict --file --json` (on `device`) says of each text (one per line)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts))
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sentiment",
                "predict",
                "--run",
                run,
                "--file",
                f.name,
                "--json",
                "--backend",
                backend,
                "--device",
                device,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return [json.loads(line) for line in split_lines(out)]


def start_server(run: str, port: int, extra: list[str]) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "serve", "--run", run, "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server stopped: {server.stdout.read()}") from None
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start in 120 s")


async def _request(reader, writer, body: bytes) -> tuple[int, bytes]:
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def load(port: int, texts: list[str], want: list[dict], clients: int, seconds: float) -> dict:
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    latencies: list[float] = []
    wrong, errors, labels_differ, largest = [], 0, 0, 0.0
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal errors, labels_differ, largest
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop:
            j = i % len(bodies)
            started = time.perf_counter()
            status, body = await _request(reader, writer, bodies[j])
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
            else:
                got = json.loads(body)["predictions"][0]
                gap = abs(got["scores"][want[j]["label"]] - want[j]["probability"])
                largest = max(largest, gap)
                labels_differ += got["label"] != want[j]["label"]
                if got["label"] != want[j]["label"] or gap > 1e-6:
                    wrong.append((j, got, want[j]))
            i += clients
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    took = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / took, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 1),
        "errors": errors,
        "differ_from_predict": len(wrong),
        "labels_differ": labels_differ,
        "largest_probability_difference": largest,
        "first_difference": wrong[0] if wrong else None,
    }


def screenshot(port: int, review: str, out: Path) -> None:
    """The page at / after classifying `review`, in headless Chromium (Debian's chromium, Selenium)."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,860",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "text").send_keys(review)
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "label")))
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def health(port: int) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def explain_times(port: int, texts: list[str]) -> dict:
    """POST /explain of each text in turn: the median and slowest answer, in ms."""
    import http.client

    took = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for text in texts:
        started = time.perf_counter()
        conn.request("POST", "/explain", body=json.dumps({"text": text}), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"/explain answered {response.status}")
        took.append(1000 * (time.perf_counter() - started))
    conn.close()
    took.sort()
    return {
        "explain_reviews": len(took),
        "explain_median_ms": round(took[len(took) // 2], 1),
        "explain_max_ms": round(took[-1], 1),
    }


def table(results: list[dict]) -> str:
    columns = "run | model | backend | precision | clients | seconds | requests/s | p50 ms | p90 ms | p99 ms | errors"
    rows = [f"| {columns} | differ from predict | explain median / max ms |", "|---" * 13 + "|"]
    for r in results:
        cells = [r["run"], r["model"], r.get("backend", "torch"), r.get("precision", "?"), r["clients"]]
        cells += [f"{r['seconds']:.0f}", f"{r['requests_per_s']:.0f}", r["p50_ms"], r["p90_ms"], r["p99_ms"]]
        cells.append(r["errors"])
        explain = "—"
        if r.get("explain_reviews"):
            explain = f"{r['explain_median_ms']:.0f} / {r['explain_max_ms']:.0f} ({r['explain_reviews']} reviews)"
        differ = f"{r['differ_from_predict']} (labels {r['labels_differ']}, "
        differ += f"by at most {r['largest_probability_difference']:.0e})"
        cells += [differ if r["differ_from_predict"] else "0", explain]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    machines = sorted({f"{r['cpu']}, {r['cores']} cores for server and clients, {r['date']}" for r in results})
    rows += [
        "",
        f"One IMDb test review per request; explain: POST /explain of reviews one after another (torch "
        "rows only: explanations use the torch model whatever the backend); "
        f"{'; '.join(machines)}. Re-run: `make bench-serve RUNS=...`.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="a text run folder (repeat for several)")
    ap.add_argument("--data", default=os.environ.get("SENTIMENT_IMDB"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reviews", type=int, default=2000, help="distinct test reviews the clients cycle through")
    ap.add_argument("--backends", default="torch", help="comma-separated: torch, onnx, onnx-int8")
    ap.add_argument("--serve-args", default="", help="extra `sentiment serve` options, e.g. '--max-batch 32'")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--explain", type=int, default=20, help="reviews to time POST /explain on, one at a time")
    ap.add_argument("--screenshot", help="save a PNG of the page for the first run here")
    a = ap.parse_args()
    if not a.data:
        raise SystemExit("name the IMDb archive with --data or $SENTIMENT_IMDB")
    texts = reviews(a.data, a.reviews)
    fresh = []
    for run, backend in [(r, b) for r in a.run for b in a.backends.split(",")]:
        want = predict_file(run, texts, backend)
        meta = json.loads((Path(run) / "config.json").read_text())
        port = free_port()
        server = start_server(run, port, [*a.serve_args.split(), "--backend", backend])
        try:
            if a.screenshot and run == a.run[0] and backend == "torch":
                screenshot(port, SCREENSHOT_REVIEW, Path(a.screenshot))
            asyncio.run(load(port, texts[:50], want[:50], 2, 3))  # warm-up
            result = asyncio.run(load(port, texts, want, a.clients, a.seconds))
            result["precision"] = health(port)["precision"]
            if backend == "torch":
                result |= explain_times(port, texts[: a.explain])
        finally:
            server.terminate()
            server.wait(timeout=30)
        result |= {
            "run": Path(run).resolve().name,
            "backend": backend,
            "model": meta["config"].get("model"),
            "clients": a.clients,
            "seconds": a.seconds,
            "serve_args": a.serve_args,
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "date": time.strftime("%Y-%m-%d"),
        }
        print(json.dumps(result), flush=True)
        fresh.append(result)
    results = merge_results(RESULTS, fresh, key=lambda r: (r["run"], r.get("backend", "torch")))
    print(table(results))
    if a.readme:
        replace_section("bench-serve", table(results))


if __name__ == "__main__":
    main()

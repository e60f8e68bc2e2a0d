"""Downloads against a real HTTP server on 127.0.0.1, serving bytes made here."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentiment.errors import SentimentError
from sentiment.hub import data_dir, download, file_digest, verify

PAYLOAD = bytes(range(256)) * 6000  # ~1.5 MiB: spans more than one 1 MiB chunk
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_length: int | None = None  # None: the true length
    stall: bool = False  # send headers, then hang until the test ends


class _Server(http.server.ThreadingHTTPServer):
    routes: dict[str, Route]
    hits: Counter
    release: threading.Event


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        self.send_response(route.status)
        length = len(route.body) if route.content_length is None else route.content_length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if route.stall:
            self.server.release.wait(10)  # bounded: the finalizer sets it
            return
        self.wfile.write(route.body)

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits, srv.release = {}, Counter(), threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def assert_one_line_naming(excinfo: pytest.ExceptionInfo, *names: object) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "\n" not in str(excinfo.value.args[0])
    for name in names:
        assert str(name) in msg, f"{name!s} not in {msg!r}"
    return msg


def assert_nothing_left(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("progress", [False, True])
def test_good_file(server, tmp_path, capsys, progress):
    server.routes["/good.bin"] = Route(PAYLOAD)
    dest = tmp_path / "sub" / "good.bin"
    got = download(f"{server.url}/good.bin", dest, sha256=PAYLOAD_SHA256, progress=progress, desc="fetch-good")
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]  # no .part leftovers
    err = capsys.readouterr().err
    assert ("fetch-good" in err) == progress


@pytest.mark.parametrize("algo", ["md5", "sha1", "sha256"])
def test_each_algorithm(server, tmp_path, algo):
    server.routes["/f"] = Route(b"hello")
    digest = hashlib.new(algo, b"hello").hexdigest()
    dest = download(f"{server.url}/f", tmp_path / "f", progress=False, **{algo: digest.upper()})
    assert dest.read_bytes() == b"hello"


def test_strongest_checksum_wins(server, tmp_path):
    server.routes["/f"] = Route(b"hello")
    dest = download(
        f"{server.url}/f",
        tmp_path / "f",
        md5="0" * 32,  # wrong, but ignored because sha256 is given
        sha256=hashlib.sha256(b"hello").hexdigest(),
        progress=False,
    )
    assert dest.read_bytes() == b"hello"


def test_no_checksum(server, tmp_path):
    server.routes["/f"] = Route(b"hello")
    assert download(f"{server.url}/f", tmp_path / "f", progress=False).read_bytes() == b"hello"


def test_corrupt_file(server, tmp_path):
    server.routes["/bad.bin"] = Route(PAYLOAD[:-1] + b"\x00")
    url, dest = f"{server.url}/bad.bin", tmp_path / "bad.bin"
    with pytest.raises(SentimentError) as excinfo:
        download(url, dest, sha256=PAYLOAD_SHA256, progress=False)
    msg = assert_one_line_naming(excinfo, url, dest, PAYLOAD_SHA256)
    assert hashlib.sha256(server.routes["/bad.bin"].body).hexdigest() in msg
    assert_nothing_left(tmp_path)


def test_truncated_response(server, tmp_path):
    server.routes["/short.bin"] = Route(PAYLOAD[:1000], content_length=len(PAYLOAD))
    url, dest = f"{server.url}/short.bin", tmp_path / "short.bin"
    with pytest.raises(SentimentError) as excinfo:
        download(url, dest, progress=False)  # no checksum: the length check alone must catch it
    assert_one_line_naming(excinfo, url, dest)
    assert_nothing_left(tmp_path)


def test_http_404(server, tmp_path):
    url, dest = f"{server.url}/missing.bin", tmp_path / "missing.bin"
    with pytest.raises(SentimentError) as excinfo:
        download(url, dest, sha256=PAYLOAD_SHA256, progress=False)
    msg = assert_one_line_naming(excinfo, url, dest)
    assert "404" in msg
    assert_nothing_left(tmp_path)


def test_stalled_response_times_out(server, tmp_path):
    server.routes["/stall.bin"] = Route(PAYLOAD, stall=True)
    url, dest = f"{server.url}/stall.bin", tmp_path / "stall.bin"
    with pytest.raises(SentimentError) as excinfo:
        download(url, dest, timeout=0.2, progress=False)
    assert "timed out" in assert_one_line_naming(excinfo, url, dest)
    assert_nothing_left(tmp_path)


def test_dead_port(tmp_path):
    with socket.socket() as s:  # a port that was just free on loopback and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, dest = f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin"
    start = time.monotonic()
    with pytest.raises(SentimentError) as excinfo:
        download(url, dest, timeout=1.0, progress=False)
    assert time.monotonic() - start < 5  # a guard against hanging, not a benchmark
    assert_one_line_naming(excinfo, url, dest)
    assert_nothing_left(tmp_path)


def test_valid_dest_is_not_downloaded_again(server, tmp_path):
    server.routes["/good.bin"] = Route(PAYLOAD)
    dest = tmp_path / "good.bin"
    download(f"{server.url}/good.bin", dest, sha256=PAYLOAD_SHA256, progress=False)
    mtime = dest.stat().st_mtime_ns
    download(f"{server.url}/good.bin", dest, sha256=PAYLOAD_SHA256, progress=False)
    download(f"{server.url}/good.bin", dest, progress=False)  # no checksum: existing file is trusted
    assert server.hits["/good.bin"] == 1
    assert dest.stat().st_mtime_ns == mtime


def test_corrupt_dest_is_replaced(server, tmp_path):
    server.routes["/good.bin"] = Route(PAYLOAD)
    dest = tmp_path / "good.bin"
    dest.write_bytes(b"half a file")
    download(f"{server.url}/good.bin", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert server.hits["/good.bin"] == 1
    assert dest.read_bytes() == PAYLOAD
    assert list(tmp_path.iterdir()) == [dest]


def test_corrupt_dest_removed_when_redownload_fails(server, tmp_path):
    dest = tmp_path / "gone.bin"
    dest.write_bytes(b"half a file")
    with pytest.raises(SentimentError):
        download(f"{server.url}/gone.bin", dest, sha256=PAYLOAD_SHA256, progress=False)
    assert_nothing_left(tmp_path)


def test_dest_is_a_folder(tmp_path):
    with pytest.raises(SentimentError) as excinfo:
        download("http://127.0.0.1:9/x", tmp_path, progress=False)
    assert_one_line_naming(excinfo, tmp_path)


def test_file_digest_and_verify(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert file_digest(path) == PAYLOAD_SHA256
    assert file_digest(path, "md5") == hashlib.md5(PAYLOAD).hexdigest()
    verify(path, sha256=PAYLOAD_SHA256)
    verify(path, md5=hashlib.md5(PAYLOAD).hexdigest())
    verify(path)  # nothing to check
    with pytest.raises(SentimentError) as excinfo:
        verify(path, sha1="0" * 40)
    assert_one_line_naming(excinfo, path, "0" * 40, hashlib.sha1(PAYLOAD).hexdigest())
    with pytest.raises(SentimentError) as excinfo:
        verify(tmp_path / "absent", sha256=PAYLOAD_SHA256)
    assert_one_line_naming(excinfo, tmp_path / "absent")


def test_malformed_expected_digest_is_a_bug(tmp_path):
    with pytest.raises(ValueError):
        verify(tmp_path / "x", sha256="not-hex")


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SENTIMENT_DATA_DIR", raising=False)
    assert data_dir() == Path("data")
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache"

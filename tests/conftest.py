"""Shared fixtures: tiny IMDb-shaped data made in the test, and the real archive when it is present."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

POS = [
    "A wonderful film.<br /><br />I loved it, truly great acting!",
    "Great story, great cast. Brilliant and moving.",
    "One of the best movies I've seen; superb.",
]
NEG = [
    "Terrible. I don't recommend it: boring and awful.",
    "The worst film ever made, a waste of time.",
    "Bad acting, bad plot; dull from start to end.",
]


def imdb_files(prefix: str = "aclImdb") -> dict[str, bytes]:
    """Relative path -> bytes of a tiny aclImdb tree (3 pos, 3 neg per split)."""
    files: dict[str, bytes] = {f"{prefix}/README": b"readme", f"{prefix}/imdb.vocab": b"the\na\n"}
    for split, shift in (("train", 0), ("test", 100)):
        for i, text in enumerate(POS):
            files[f"{prefix}/{split}/pos/{i + shift}_{8 + i % 3}.txt"] = text.encode()
        for i, text in enumerate(NEG):
            files[f"{prefix}/{split}/neg/{i + shift}_{1 + i % 3}.txt"] = text.encode()
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        dirs = sorted({str(Path(rel).parent) for rel in files})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@contextlib.contextmanager
def serve_bytes(payload: bytes):
    """An HTTP server on 127.0.0.1 that answers every GET with `payload`; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tiny_imdb_dir(tmp_path) -> Path:
    return write_tree(tmp_path / "tiny", imdb_files()) / "aclImdb"


@pytest.fixture
def tiny_imdb_tar(tmp_path) -> Path:
    return write_tar(tmp_path / "aclImdb_v1_labeled.tar.gz", imdb_files())


@pytest.fixture
def real_imdb() -> Path:
    path = os.environ.get("SENTIMENT_IMDB")
    if not path or not Path(path).exists():
        pytest.skip("set SENTIMENT_IMDB to the IMDb archive to run real-data tests")
    return Path(path)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    # Nothing a test does may land in the repository's data/ folder.
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(tmp_path / "data"))

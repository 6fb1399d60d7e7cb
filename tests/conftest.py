"""Shared fixtures: real en-de sentence pairs and a tokenizer trained on them, both from the sample committed
in cluster/data (LibreOffice help, MPL-2.0; its README says where it comes from), so that the model, mask,
objective and decoding tests run without network access; the whole en-de task directory (fetched once
into the cache) for the tests that train through the engine; and a single-process tensor-parallel group
for the tests that run DeepSpeed in this process."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from janus.parallel import init_parallel
from janus.tokenizer import Tokenizer, train_tokenizer
from janus.export import sha256_file
from pretrain.datasets import fetch
from pretrain.packages import cache_dir

warnings.filterwarnings("ignore", message=".*Transformer Engine.*")


@pytest.fixture(scope="session")
def nmt_dir() -> Path:
    return fetch("nmt", pair="en-de")


SAMPLE = Path(__file__).parent.parent / "cluster" / "data" / "libreoffice-help-en-de.tsv"


def _sample() -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def real_pairs() -> list[tuple[str, str]]:
    """400 real pairs of moderate length (4-14 English words), offline."""
    return [p for p in _sample() if 4 <= len(p[0].split()) <= 14][:400]


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """1,000 pieces trained on the committed sample (both sides), offline; cached by the sample's hash."""
    path = cache_dir() / "test-tokenizers" / f"sample-en-de-1000-{sha256_file(SAMPLE)[:12]}.model"
    if path.exists():
        return Tokenizer(path)
    return train_tokenizer([s for pair in _sample() for s in pair], path, vocab_size=1000, character_coverage=1.0)


@pytest.fixture(scope="session", autouse=True)
def parallel():
    init_parallel(1)
    torch.set_flush_denormal(True)
    yield



class ShardServer:
    """A real HTTP server on 127.0.0.1 serving a directory, with faults to order per file name:
    "404", "500", "drop" (half the body, then the connection closes), "stall" (headers, then silence),
    "corrupt" (one byte flipped), each for the next `times` requests of that file (None: every one)."""

    def __init__(self, directory):
        import http.server
        import threading

        self.directory, self.faults, self.requests = Path(directory), {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                fault = server._take_fault(name)
                path = server.directory / name
                if fault in ("404", "500") or not path.is_file():
                    self.send_error(500 if fault == "500" else 404)
                    return
                data = path.read_bytes()
                if fault == "corrupt":
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "stall":
                    server.stalled.wait(60)
                    return
                self.wfile.write(data[:len(data) // 2] if fault == "drop" else data)

        self._handler, self.stalled = Handler, threading.Event()
        self._server = None
        self.port = None
        self.start()

    def _take_fault(self, name):
        fault, times = self.faults.get(name, (None, None))
        if fault and times is not None:
            self.faults[name] = (fault, times - 1) if times > 1 else (None, None)
        return fault

    def fail(self, name: str, fault: str, times: int | None = None):
        self.faults[name] = (fault, times)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self):
        import http.server
        import threading

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or 0), self._handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def shard_server():
    """shard_server(directory) -> a running ShardServer; every one is stopped after the test."""
    servers = []

    def serve(directory):
        servers.append(ShardServer(directory))
        return servers[-1]

    yield serve
    for s in servers:
        s.stalled.set()
        s.stop()

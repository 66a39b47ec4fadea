"""Google's checkpoints by name, against a real HTTP server on 127.0.0.1 (Range requests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mixer_cli.cli import run

NAME = "imagenet21k/Mixer-B_16"
FAST = ["--steps=2", "--batch-size=16", "--set=optim.warmup_steps=1", "--set=train.log_every=1"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        start = int(asked.split("=")[1].rstrip("-")) if asked else 0
        body = data[start:]
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_next:  # the connection drops half-way through
            server.cut_next = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bucket(official_npz, monkeypatch, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.files = {f"/{NAME}.npz": Path(official_npz[0]).read_bytes()}
    server.requests, server.cut_next = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MIXER_CHECKPOINTS_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    yield server
    server.shutdown()
    server.server_close()


def test_a_released_checkpoint_by_name_downloads_resumes_and_is_verified(
    capsys, tmp_path, bucket
) -> None:
    cached = tmp_path / "cache" / "mixer" / "checkpoints" / f"{NAME}.npz"
    bucket.cut_next = True
    argv = ["finetune", "--init", NAME, *FAST]
    assert run([*argv, "--workdir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "broke off" in err and "run the command again" in err, err
    assert not cached.exists() and cached.with_name(f"{cached.name}.part").exists()
    assert not (tmp_path / "a").exists()  # nothing written for the run
    assert run([*argv, "--workdir", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    first, resumed = bucket.requests[:2]
    assert first[1] is None and resumed[1].startswith("bytes=") and resumed[1] != "bytes=0-"
    assert cached.read_bytes() == bucket.files[f"/{NAME}.npz"]
    record = json.loads(cached.with_name(f"{cached.name}.json").read_text())
    assert record["size"] == cached.stat().st_size and len(record["sha256"]) == 64
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["init"] == NAME and results["finished"]
    count = len(bucket.requests)
    assert run(["info", "--checkpoint", NAME]) == 0  # cached: no request at all
    assert len(bucket.requests) == count
    capsys.readouterr()
    assert run(["info", "--checkpoints", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[NAME]["source"].startswith("http://127.0.0.1:") and listed[NAME]["cached"] != "-"
    assert listed["gsam/Mixer-S_8"]["cached"] == "-"
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 1
    cached.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(["info", "--checkpoint", NAME]) == 2
    err = capsys.readouterr().err
    assert "does not match the download's record" in err and str(cached) in err


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("imagenet1k/Mixer-L_16", "HTTP 404"),
        ("imagenet21k/Mixer-Q_16", "unknown released checkpoint 'imagenet21k/Mixer-Q_16'; did"),
    ],
)
def test_missing_and_unknown_names_are_one_line(capsys, bucket, name, needle) -> None:
    assert run(["info", "--checkpoint", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err

"""Google's checkpoints by name, against a real HTTP server on 127.0.0.1 (Range requests)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from numpy_vit import google_vit_params

from mixer_cli.cli import run
from mixer_cli.weights import released
from mixer_cli.weights.released import fetch as fetch_released

NAME = "imagenet21k/Mixer-B_16"
VIT_NAME = "imagenet21k/ViT-B_16"  # served, tiny, from the ViT bucket's mirror
TINY_VIT = {"patch": 4, "layers": 1, "width": 16, "mlp": 32, "heads": 2, "side": 2}
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
        if server.stall_next is not None:  # half, then nothing until the test says so
            stall, server.stall_next = server.stall_next, None
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            stall.wait(60)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bucket(official_npz, monkeypatch, tmp_path):
    """One server as the mirror of both buckets: a small Mixer under NAME, a tiny ViT
    (with a pre_logits layer) under VIT_NAME."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    vit = tmp_path / "vit.npz"
    np.savez(vit, **google_vit_params(**TINY_VIT, num_classes=10, representation=12))
    server.files = {
        f"/{NAME}.npz": Path(official_npz[0]).read_bytes(),
        f"/{VIT_NAME}.npz": vit.read_bytes(),
    }
    server.requests, server.cut_next, server.stall_next = [], False, None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for variable in ("MIXER_CHECKPOINTS_URL", "MIXER_VIT_CHECKPOINTS_URL"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{server.server_port}")
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
        ("imagenet21k+imagenet2012/ViT-L_32", "HTTP 404"),
        ("augreg/B_16-i21k", "did you mean augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1"),
        ("imagenet21k/ViT-B_61", "did you mean imagenet21k/ViT-B_16, imagenet21k/ViT-L_16"),
    ],
)
def test_missing_and_unknown_names_are_one_line(capsys, bucket, name, needle) -> None:
    assert run(["info", "--checkpoint", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_a_local_directory_is_a_mirror_and_a_missing_one_is_one_line(
    capsys, monkeypatch, tmp_path, official_npz
) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "imagenet21k").mkdir(parents=True)
    (mirror / f"{NAME}.npz").write_bytes(Path(official_npz[0]).read_bytes())
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MIXER_CHECKPOINTS_URL", str(mirror))
    assert run(["info", "--checkpoint", NAME]) == 0, capsys.readouterr().err
    cached = tmp_path / "cache" / "mixer" / "checkpoints" / f"{NAME}.npz"
    assert cached.read_bytes() == (mirror / f"{NAME}.npz").read_bytes()
    record = cached.with_name(f"{cached.name}.json")
    assert json.loads(record.read_text())["url"] == (mirror / f"{NAME}.npz").as_uri()
    capsys.readouterr()
    assert run(["info", "--checkpoint", "sam/Mixer-B_16"]) == 2  # not in the mirror
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"has no {mirror}/sam/Mixer-B_16.npz" in err, err
    record.write_text("[]")  # a record that parses but is no record
    assert run(["info", "--checkpoint", NAME]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{record} is not a download record: expected" in err, err
    monkeypatch.setenv("MIXER_CHECKPOINTS_URL", str(tmp_path / "nowhere"))
    assert run(["info", "--checkpoint", "sam/Mixer-B_16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"MIXER_CHECKPOINTS_URL={tmp_path}/nowhere: no such" in err


def test_a_file_put_where_the_offline_advice_says_is_verified_recorded_and_used(
    capsys, monkeypatch, tmp_path, official_npz
) -> None:
    """Offline, the error names where to put the file; a wrong file there is refused naming
    it, the released one (here S/32's arrays, zeros) is checked, recorded and used."""
    from mixer_cli.models.mixer import abstract_params, create_model
    from mixer_cli.weights.arrays import flatten

    name = "gsam/Mixer-S_32"
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MIXER_CHECKPOINTS_URL", "http://127.0.0.1:1")  # nothing listens
    assert run(["info", "--checkpoint", name]) == 2
    err = capsys.readouterr().err
    place = Path(err.split("put it at ")[1].split(",")[0])
    assert place == tmp_path / "cache" / "mixer" / "checkpoints" / f"{name}.npz", err
    record = place.with_name(f"{place.name}.json")
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(Path(official_npz[0]).read_bytes())  # some other Mixer
    assert run(["info", "--checkpoint", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{place}: 'stem/kernel' has shape (4, 4, 3, 16)" in err
    assert f"is no copy of {name}" in err and not record.exists()
    shapes = flatten(abstract_params(create_model("S/32", num_classes=1000), 224))
    np.savez(place, **{k: np.zeros(v.shape, np.float32) for k, v in shapes.items()})
    assert run(["info", "--checkpoint", name, "--json"]) == 0
    captured = capsys.readouterr()
    assert f"note: {place} had no download record" in captured.err
    assert json.loads(captured.out)[0]["model"] == "S/32"
    assert json.loads(record.read_text())["size"] == place.stat().st_size  # checked from now on


def test_a_download_killed_mid_transfer_leaves_only_its_part_and_the_rerun_completes(
    tmp_path, bucket
) -> None:
    """kill -9 of a process downloading a released name: no file where the checkpoint goes,
    and the next use continues the part to the very file served."""
    cached = tmp_path / "cache" / "mixer" / "checkpoints" / f"{NAME}.npz"
    part = cached.with_name(f"{cached.name}.part")
    bucket.stall_next = stall = threading.Event()
    fetch = f"from mixer_cli.weights.released import fetch; fetch({NAME!r})"
    child = subprocess.Popen([sys.executable, "-c", fetch], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert part.stat().st_size > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        stall.set()
    assert child.returncode == -signal.SIGKILL and not cached.exists()
    have = part.stat().st_size
    assert 0 < have <= len(bucket.files[f"/{NAME}.npz"]) // 2
    assert fetch_released(NAME) == cached
    assert cached.read_bytes() == bucket.files[f"/{NAME}.npz"] and not part.exists()
    assert bucket.requests[-1][1] == f"bytes={have}-"


def test_a_released_vit_comes_from_its_own_bucket_and_loads_by_name(
    capsys, monkeypatch, tmp_path, bucket
) -> None:
    """MIXER_VIT_CHECKPOINTS_URL mirrors the ViT bucket (the Mixer's variable points
    nowhere here); the file is downloaded, recorded and read as the ViT it holds (the path
    every --init takes, `finetune --init imagenet21k/ViT-B_16` included)."""
    monkeypatch.setenv("MIXER_CHECKPOINTS_URL", "http://127.0.0.1:1")  # nothing listens
    out = tmp_path / "as-read.npz"
    assert run(["convert", VIT_NAME, str(out)]) == 0, capsys.readouterr().err
    assert bucket.requests == [(f"/{VIT_NAME}.npz", None)]
    cached = tmp_path / "cache" / "mixer" / "checkpoints" / f"{VIT_NAME}.npz"
    assert cached.read_bytes() == bucket.files[f"/{VIT_NAME}.npz"]
    with np.load(cached) as served, np.load(out) as read:  # read as the ViT it holds
        assert set(read.files) == set(served.files) and "pre_logits/kernel" in read.files
        assert all(np.array_equal(read[k], served[k]) for k in served.files)
    assert cached.with_name(f"{cached.name}.json").is_file()  # size and sha256, checked from now
    assert run(["info", "--checkpoints", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[VIT_NAME]["source"] == f"http://127.0.0.1:{bucket.server_port}/{VIT_NAME}.npz"
    assert (listed[VIT_NAME]["family"], listed[VIT_NAME]["variant"]) == ("vit", "B/16")
    augreg = "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
    assert listed[f"{augreg}--imagenet2012-steps_20k-lr_0.03-res_384"]["resolution"] == 384
    assert listed["gsam/Mixer-S_8"]["source"].startswith("http://127.0.0.1:1/")


def test_a_vit_put_in_the_cache_by_hand_is_checked_against_its_catalog_entry(
    capsys, monkeypatch, tmp_path
) -> None:
    """A hand-placed ViT is verified through the registry against its entry, a pre_logits
    layer included: without that layer it is refused, naming the file; with it, adopted."""
    name = "imagenet21k/ViT-tiny"  # a tiny entry, as the real ones are hundreds of MiB
    entry = released.Released(
        "vit_models", "vit", "1x16-32-2/4", 8, 10, (("representation_size", 12),)
    )
    monkeypatch.setitem(released.CATALOG, name, entry)
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MIXER_VIT_CHECKPOINTS_URL", "http://127.0.0.1:1")  # offline
    place = tmp_path / "cache" / "mixer" / "checkpoints" / f"{name}.npz"
    place.parent.mkdir(parents=True)
    np.savez(place, **google_vit_params(**TINY_VIT, num_classes=10))  # no pre_logits
    out = tmp_path / "as-read.npz"
    assert run(["convert", name, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(place) in err and f"is no copy of {name}" in err, err
    assert "'head/kernel' has shape (16, 10) but" in err  # its head sits on no pre_logits
    assert not out.exists() and not place.with_name(f"{place.name}.json").exists()
    np.savez(place, **google_vit_params(**TINY_VIT, num_classes=10, representation=12))
    assert run(["convert", name, str(out)]) == 0
    assert f"note: {place} had no download record" in capsys.readouterr().err
    assert place.with_name(f"{place.name}.json").is_file()  # checked from now on
    with np.load(out) as read:
        assert read["pre_logits/kernel"].shape == (16, 12)

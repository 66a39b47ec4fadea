"""Google's released Mixer checkpoints by name, downloaded once into the cache and verified.

The names are the vision_transformer README's (`imagenet21k/Mixer-B_16`, `sam/Mixer-B_32`,
`gsam/Mixer-S_8`, ...), served from the public `mixer_models` bucket; `MIXER_CHECKPOINTS_URL`
points at a mirror instead (a URL, or a local directory laid out as the bucket). A download
goes to `NAME.npz.part` (resumed with an HTTP range request when interrupted) and is renamed
into place only when complete, beside a record of its size and sha256; every later use
checks the file against that record. Google publishes no checksums, so the first download
is the reference. A file put at the cache path by hand (fetched elsewhere, offline) has no
record: it is used once the model loader has verified it (`unrecorded`, `adopt`).
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mixer_cli.core import files
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import CheckpointError, CheckpointNotFound, ConfigError

DEFAULT_URL = "https://storage.googleapis.com/mixer_models"
NAMES = (
    "imagenet21k/Mixer-B_16",
    "imagenet21k/Mixer-L_16",
    "imagenet1k/Mixer-B_16",
    "imagenet1k/Mixer-L_16",
    "sam/Mixer-B_16",
    "sam/Mixer-B_32",
    "gsam/Mixer-B_16",
    "gsam/Mixer-B_32",
    "gsam/Mixer-S_16",
    "gsam/Mixer-S_32",
    "gsam/Mixer-S_8",
)
CHUNK = 1 << 20
RECORD = {"size": int, "sha256": str}  # what a download's record holds


def base_url() -> str:
    """Where released checkpoints come from: a URL, or a local mirror as a file:// URL."""
    given = os.environ.get("MIXER_CHECKPOINTS_URL") or DEFAULT_URL
    base = given.rstrip("/") or given
    if "://" in base:
        return base
    mirror = Path(base).expanduser()
    if not mirror.is_dir():
        raise ConfigError(
            f"MIXER_CHECKPOINTS_URL={base}: no such directory; give a directory laid out as "
            f"the bucket (GROUP/Mixer-SIZE_PATCH.npz) or a URL such as {DEFAULT_URL}"
        )
    return mirror.resolve().as_uri()


def name_of(spec: str) -> str | None:
    """The released name `spec` stands for (`.npz` optional), or None if it is not one."""
    stem = spec.removesuffix(".npz")
    return stem if stem in NAMES else None


def head_classes(name: str) -> int:
    """The classes of a released checkpoint's head: ImageNet-21k's or ImageNet-1k's."""
    return 21843 if name.startswith("imagenet21k/") else 1000


def looks_like_a_name(spec: str) -> bool:
    """`group/Mixer-...` that is no file here: meant as a released name."""
    return "/" in spec and "Mixer-" in spec and not Path(spec).exists()


def locate(spec: str | os.PathLike) -> Path:
    """A local path for an --init value: the path itself, or a released checkpoint's
    verified copy in the cache (downloaded first if needed), or an `hf-hub:` name's file
    in the Hugging Face cache."""
    text = str(spec)
    if Path(text).exists():
        return Path(text)
    from mixer_cli.weights import hub

    if hub.is_hub_name(text):
        return hub.fetch(text)
    name = name_of(text)
    if name is None:
        if looks_like_a_name(text):
            close = difflib.get_close_matches(text.removesuffix(".npz"), NAMES, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CheckpointNotFound(
                f"unknown released checkpoint {text!r}{hint} (`mixer info --checkpoints` "
                "lists them)"
            )
        return Path(text)
    return fetch(name)


def cache_path(name: str) -> Path:
    from mixer_cli.core.cache import default_cache_dir

    return default_cache_dir() / "checkpoints" / f"{name}.npz"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str) -> Path:
    """The released checkpoint `name`, downloaded once and checked at every use (a copy
    put in the cache by hand is returned as it is: see `unrecorded`)."""
    path = cache_path(name)
    record = record_path(path)
    if path.exists() and record.exists():
        fix = "delete it to download it again"
        want = files.read_json(record, "a download record", RECORD, CheckpointError, fix)
        size = path.stat().st_size
        if size != want["size"] or sha256(path) != want["sha256"]:
            raise CheckpointError(
                f"the cached {name} ({path}) does not match the download's record "
                f"({size:,} bytes, {want['size']:,} recorded, or another sha256): {fix}"
            )
        return path
    if path.exists():
        return path  # put here by hand: the loader verifies it before use (`adopt`)
    url = f"{base_url()}/{name}.npz"
    part = path.with_name(f"{path.name}.part")
    _download(url, part)
    write_record(record, url, part)
    os.replace(part, path)  # complete: only now does it look like a checkpoint
    return path


def record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.json")


def write_record(record: Path, url: str, path: Path) -> None:
    digest = {"url": url, "size": path.stat().st_size, "sha256": sha256(path)}
    with atomic_write(record) as f:
        f.write(json.dumps(digest) + "\n")


def unrecorded(spec: str | os.PathLike) -> str | None:
    """The released name `spec` stands for when its cached file has no download record
    (copied there by hand, as the offline advice says); else None."""
    name = name_of(str(spec)) if not Path(spec).exists() else None
    if name is None:
        return None
    path = cache_path(name)
    return name if path.is_file() and not record_path(path).exists() else None


def adopt(name: str) -> Path:
    """Record a hand-placed copy of `name` that the loader verified: from now on it is
    checked against that record like a download."""
    from mixer_cli.core import report

    path = cache_path(name)
    write_record(record_path(path), f"copied by hand to {path}", path)
    report.stderr.print(
        f"note: {path} had no download record; it holds {name}'s arrays, so it is recorded "
        "(size and sha256) and used",
        soft_wrap=True,
    )
    return path


def _download(url: str, part: Path) -> None:
    """Fetch `url` into `part`, continuing a previous partial transfer where it stopped."""
    from mixer_cli.core import report

    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is whole
            return
        raise CheckpointNotFound(
            f"cannot download {url}: HTTP {err.code} {err.reason}"
            + (" (no such checkpoint there)" if err.code == 404 else "")
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if url.startswith("file:"):
            local = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
            raise CheckpointNotFound(
                f"the mirror MIXER_CHECKPOINTS_URL names has no {local} "
                f"({getattr(reason, 'strerror', None) or reason}): put the file there or "
                "point MIXER_CHECKPOINTS_URL elsewhere"
            ) from None
        raise CheckpointNotFound(
            f"cannot download {url} ({reason}): fetch it where the network allows and put it "
            f"at {part.with_suffix('')}, or set MIXER_CHECKPOINTS_URL to a mirror"
        ) from None
    with response:
        resumed = response.status == 206
        total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as out, report.progress() as bar:
            task = bar.add_task(f"downloading {url}", total=total or None,
                                completed=have if resumed else 0)  # fmt: skip
            try:
                for block in iter(lambda: response.read1(CHUNK), b""):
                    out.write(block)
                    bar.advance(task, len(block))
            except (OSError, http.client.HTTPException) as err:
                raise CheckpointNotFound(
                    f"the download of {url} broke off ({type(err).__name__}); run the command "
                    "again to continue it"
                ) from None
        if total and part.stat().st_size != total:
            raise CheckpointNotFound(
                f"the download of {url} broke off at {part.stat().st_size:,} of {total:,} "
                "bytes; run the command again to continue it"
            )

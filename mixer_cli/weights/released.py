"""Google's released checkpoints by name, downloaded once into the cache and verified.

The names are the vision_transformer README's: the Mixers of the `mixer_models` bucket
(`imagenet21k/Mixer-B_16`, `sam/Mixer-B_32`, `gsam/Mixer-S_8`, ...) and the ViTs of the
`vit_models` bucket (`imagenet21k/ViT-B_16`, `imagenet21k+imagenet2012/ViT-L_16`, and the
AugReg checkpoints its README recommends, `augreg/B_16-i21k-300ep-...` with their
ImageNet fine-tunes `...--imagenet2012-steps_20k-lr_0.03-res_384`). Each name knows its
bucket and the model its file holds (family, variant, resolution, classes), so a file put
in the cache by hand is verified against that model.

Mirrors: one environment variable per bucket, each pointing at a copy laid out as that
bucket (a URL, or a local directory): `MIXER_CHECKPOINTS_URL` for `mixer_models`, as
before, and `MIXER_VIT_CHECKPOINTS_URL` for `vit_models`. The buckets share group names
(`imagenet21k/`, `sam/`, `gsam/`), so one root could hold both only with a new folder
level, which would move every existing Mixer mirror; a variable per bucket keeps those
working and makes a mirror a plain `gsutil rsync` of the bucket.

A download goes to `NAME.npz.part` (resumed with an HTTP range request when interrupted)
and is renamed into place only when complete, beside a record of its size and sha256;
every later use checks the file against that record. Google publishes no checksums, so
the first download is the reference. A file put at the cache path by hand (fetched
elsewhere, offline) has no record: it is used once the model loader has verified it
(`unrecorded`, `adopt`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.core import files
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import CheckpointError, CheckpointNotFound, ConfigError

DEFAULT_URL = "https://storage.googleapis.com/mixer_models"
# bucket -> (the environment variable naming its mirror, its public URL)
BUCKETS = {
    "mixer_models": ("MIXER_CHECKPOINTS_URL", DEFAULT_URL),
    "vit_models": ("MIXER_VIT_CHECKPOINTS_URL", "https://storage.googleapis.com/vit_models"),
}
IMAGENET21K, IMAGENET1K = 21843, 1000  # the classes of the released heads


@dataclass(frozen=True)
class Released:
    """One released file: where it is and the model it holds (what verifies a copy)."""

    bucket: str
    family: str  # a model family of the registry
    variant: str  # in the family's notation
    resolution: int
    classes: int
    # model.* settings beyond the defaults that the file's model has (Google's
    # ImageNet-21k ViTs: a pre_logits layer as wide as the model)
    settings: tuple[tuple[str, Any], ...] = ()


def _mixer(group: str, size: str) -> tuple[str, Released]:
    classes = IMAGENET21K if group == "imagenet21k" else IMAGENET1K
    variant = size.replace("_", "/")
    return f"{group}/Mixer-{size}", Released("mixer_models", "mixer", variant, 224, classes)


def _vit(
    name: str, size: str, resolution: int, classes: int, pre_logits: int = 0
) -> tuple[str, Released]:
    settings = (("representation_size", pre_logits),) if pre_logits else ()
    variant = size.replace("_", "/")
    return name, Released("vit_models", "vit", variant, resolution, classes, settings)


# The vision_transformer README's recommended AugReg ViTs (the best ImageNet-21k
# checkpoint of each size by upstream validation accuracy) and the learning rate of
# their 384 px ImageNet fine-tune. Hybrids (R50+L/32, R26+S/32, R+Ti/16) are no `vit`.
_AUGREG = {
    "L_16": ("aug_strong1-wd_0.1", "0.01"),
    "B_16": ("aug_medium1-wd_0.1", "0.03"),
    "S_16": ("aug_light1-wd_0.03", "0.03"),
    "Ti_16": ("aug_none-wd_0.03", "0.03"),
    "B_32": ("aug_light1-wd_0.1", "0.01"),
    "S_32": ("aug_none-wd_0.1", "0.01"),
}
_WIDTHS = {"B": 768, "L": 1024, "H": 1280}  # the pre_logits width of the original ViTs
# The original ViTs fine-tuned on ImageNet: name suffix -> resolution.
_IMAGENET = {"B_16": 384, "B_16-224": 224, "B_32": 384, "L_16": 384, "L_16-224": 224, "L_32": 384}


def _augreg(size: str, fine_tune_lr: str | None = None) -> str:
    aug = _AUGREG[size][0]
    name = f"augreg/{size}-i21k-300ep-lr_0.001-{aug}-do_0.0-sd_0.0"
    return name + (f"--imagenet2012-steps_20k-lr_{fine_tune_lr}-res_384" if fine_tune_lr else "")


CATALOG: dict[str, Released] = dict(
    [
        *(_mixer("imagenet21k", s) for s in ("B_16", "L_16")),
        *(_mixer("imagenet1k", s) for s in ("B_16", "L_16")),
        *(_mixer("sam", s) for s in ("B_16", "B_32")),
        *(_mixer("gsam", s) for s in ("B_16", "B_32", "S_16", "S_32", "S_8")),
        *(
            _vit(f"imagenet21k/ViT-{s}", s, 224, IMAGENET21K, _WIDTHS[s[0]])
            for s in ("B_16", "B_32", "L_16", "L_32", "H_14")
        ),
        *(
            _vit(f"imagenet21k+imagenet2012/ViT-{s}", s.split("-")[0], res, IMAGENET1K)
            for s, res in _IMAGENET.items()
        ),
        *(_vit(_augreg(s), s, 224, IMAGENET21K) for s in _AUGREG),
        *(_vit(_augreg(s, lr), s, 384, IMAGENET1K) for s, (_, lr) in _AUGREG.items()),
    ]
)
NAMES = tuple(CATALOG)
GROUPS = frozenset(name.split("/")[0] for name in NAMES)
CHUNK = 1 << 20
RECORD = {"size": int, "sha256": str}  # what a download's record holds


def base_url(bucket: str = "mixer_models") -> str:
    """Where a bucket's checkpoints come from: its mirror's URL, or a local mirror as a
    file:// URL, else the public bucket."""
    variable, public = BUCKETS[bucket]
    given = os.environ.get(variable) or public
    base = given.rstrip("/") or given
    if "://" in base:
        return base
    mirror = Path(base).expanduser()
    if not mirror.is_dir():
        raise ConfigError(
            f"{variable}={base}: no such directory; give a directory laid out as the "
            f"{bucket} bucket (GROUP/NAME.npz) or a URL such as {public}"
        )
    return mirror.resolve().as_uri()


def url_of(name: str) -> str:
    """Where the released checkpoint `name` is downloaded from."""
    return f"{base_url(CATALOG[name].bucket)}/{name}.npz"


def name_of(spec: str) -> str | None:
    """The released name `spec` stands for (`.npz` optional), or None if it is not one."""
    stem = spec.removesuffix(".npz")
    return stem if stem in CATALOG else None


def entry(name: str) -> Released:
    """What the released checkpoint `name` is: its bucket and the model its file holds."""
    return CATALOG[name]


def looks_like_a_name(spec: str) -> bool:
    """`GROUP/...` with a released checkpoint's group (`imagenet21k`, `augreg`, ...) that
    is no file here: meant as a released name."""
    return spec.split("/")[0] in GROUPS and "/" in spec and not Path(spec).exists()


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
            stem = text.removesuffix(".npz")
            # names it begins (AugReg's are long) before the merely similar ones
            starting = [n for n in NAMES if n.startswith(stem)]
            close = list(dict.fromkeys(starting + difflib.get_close_matches(stem, NAMES, n=3)))[:3]
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
    url = url_of(name)
    part = path.with_name(f"{path.name}.part")
    _download(url, part, BUCKETS[CATALOG[name].bucket][0])
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


def _download(url: str, part: Path, mirror: str) -> None:
    """Fetch `url` into `part`, continuing a previous partial transfer where it stopped
    (`mirror`: the variable that points the bucket elsewhere, for messages)."""
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
                f"the mirror {mirror} names has no {local} "
                f"({getattr(reason, 'strerror', None) or reason}): put the file there or "
                f"point {mirror} elsewhere"
            ) from None
        raise CheckpointNotFound(
            f"cannot download {url} ({reason}): fetch it where the network allows and put it "
            f"at {part.with_suffix('')}, or set {mirror} to a mirror"
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

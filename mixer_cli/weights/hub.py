"""`hf-hub:ORG/NAME` checkpoints: timm's Mixer weights on the Hugging Face hub.

Fetched with `huggingface_hub` into its own cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub), so files timm or `hf download` fetched are reused, and its
offline mode (HF_HUB_OFFLINE=1) works as it does everywhere: only the cache is read.
Each checkpoint is the repository's model.safetensors plus config.json, whose
pretrained_cfg gives the input normalisation (`weights.timm.read` folds it into the stem).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from mixer_cli.core.errors import CheckpointNotFound, ConfigError

PREFIX = "hf-hub:"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def is_hub_name(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _cache_dir() -> str | None:
    """The hub cache as the environment names it now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch(spec: str) -> Path:
    """The local model.safetensors of `hf-hub:ORG/NAME[@REVISION]`, downloaded if needed."""
    return _fetch(spec, _cache_dir(), _offline())


@functools.cache  # one lookup per process and cache: each online one asks the hub
def _fetch(spec: str, cache_dir: str | None, offline: bool) -> Path:
    repo, _, revision = spec.removeprefix(PREFIX).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(
            f"{spec!r}: expected hf-hub:ORG/NAME, e.g. hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    def download(filename: str) -> Path:
        return Path(
            hf_hub_download(
                repo,
                filename,
                revision=revision or None,
                cache_dir=cache_dir,
                local_files_only=offline,
                library_name="mixer-cli",
            )
        )

    try:
        weights = download(WEIGHTS)
    except HFValidationError as err:  # e.g. '..' or '--' in the name, a space, a leading '.'
        raise ConfigError(
            f"{spec!r} is no Hugging Face repository name ({' '.join(str(err).split())}); "
            "expected hf-hub:ORG/NAME, e.g. hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k"
        ) from None
    except LocalEntryNotFoundError:
        where = cache_dir or "~/.cache/huggingface/hub"
        raise CheckpointNotFound(
            f"{spec}: {WEIGHTS} is not in the Hugging Face cache ({where})"
            + (" and HF_HUB_OFFLINE is set" if offline else " and the hub is unreachable")
            + f"; where the network allows run `hf download {repo} {WEIGHTS} {CONFIG}` "
            "and copy the cache here (or point HF_HUB_CACHE at it)"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFound(f"{spec}: no such repository on the Hugging Face hub") from None
    except EntryNotFoundError:
        raise CheckpointNotFound(
            f"{spec}: the repository has no {WEIGHTS} (mixer reads timm's safetensors weights)"
        ) from None
    except HfHubHTTPError as err:
        raise CheckpointNotFound(
            f"{spec}: the Hugging Face hub refused the download ({err})"
        ) from None
    try:  # the input normalisation; without it timm's Mixer default (0.5/0.5) applies
        download(CONFIG)
    except (LocalEntryNotFoundError, EntryNotFoundError, HfHubHTTPError):
        from mixer_cli.core import report

        report.stderr.print(
            f"note: {spec} has no {CONFIG} here: assuming timm's Mixer input normalisation "
            "(mean 0.5, std 0.5)"
        )
    return weights

"""Checkpoints in Google's official ``.npz`` layout: read, check, infer, write.

The official MLP-Mixer releases are NumPy archives whose keys are the Flax
parameter paths joined by ``/`` (``MixerBlock_0/token_mixing/Dense_0/kernel``).
We read them with ``allow_pickle=False`` (an archive cannot run code), infer the
architecture from the array shapes when no variant is given, and write our own
parameters in the same layout so they load in the reference code too.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from mixer_cli.errors import CheckpointError, CheckpointMismatch, CheckpointNotFound
from mixer_cli.models import MixerSpec, MlpMixer, abstract_params, create_model, parse_variant
from mixer_cli.models.variants import spec_from_dims

Params = dict[str, Any]


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's shapes say about the model that made it."""

    spec: MixerSpec
    num_classes: int  # 0 when the checkpoint has no head
    resolution: int  # native (pre-training) resolution, from the sequence length


@dataclass
class Pretrained:
    """A model with its parameters and the resolution its weights expect."""

    model: MlpMixer
    params: Params
    architecture: Architecture

    @property
    def resolution(self) -> int:
        return self.architecture.resolution

    def __call__(self, images: Any) -> Any:
        """Logits for a batch of images [B, R, R, 3] with values in [-1, 1]."""
        return self.model.apply({"params": self.params}, images)[0]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat ``{'a/b/c': array}`` contents of an npz file, refusing anything unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, expected an .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            flat = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"cannot read {str(path)!r} as an .npz checkpoint: {err}") from err
    if not flat:
        raise CheckpointError(f"checkpoint {str(path)!r} contains no arrays")
    return flat


def write_npz(params: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a parameter tree in the official layout, atomically (never a half-written file)."""
    path = Path(path)
    flat = {
        "/".join(keys): np.asarray(value)
        for keys, value in traverse_util.flatten_dict(params).items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def infer_architecture(flat: Mapping[str, np.ndarray], source: str = "checkpoint") -> Architecture:
    """Read patch size, depth, widths, native resolution and classes off the array shapes."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in flat:
            raise CheckpointMismatch(f"{source} has no {key!r}: not an MLP-Mixer checkpoint")
        if flat[key].ndim != ndim:
            raise CheckpointMismatch(
                f"{source}: {key!r} has shape {flat[key].shape}, expected {ndim} dimensions"
            )
        return tuple(flat[key].shape)

    patch, patch_w, channels, hidden = shape("stem/kernel", 4)
    if patch != patch_w or channels != 3:
        raise CheckpointMismatch(
            f"{source}: 'stem/kernel' has shape {flat['stem/kernel'].shape}, "
            "expected (P, P, 3, C) with square patches"
        )
    num_blocks = sum(
        1 for k in flat if k.startswith("MixerBlock_") and k.endswith("LayerNorm_0/scale")
    )
    if num_blocks == 0:
        raise CheckpointMismatch(f"{source} has no MixerBlock_0: not an MLP-Mixer checkpoint")
    seq_len, tokens_mlp_dim = shape("MixerBlock_0/token_mixing/Dense_0/kernel", 2)
    _, channels_mlp_dim = shape("MixerBlock_0/channel_mixing/Dense_0/kernel", 2)
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise CheckpointMismatch(
            f"{source}: 'MixerBlock_0/token_mixing/Dense_0/kernel' gives a sequence length "
            f"of {seq_len}, which is not a square number of patches"
        )
    num_classes = shape("head/kernel", 2)[1] if "head/kernel" in flat else 0
    spec = spec_from_dims(patch, num_blocks, hidden, tokens_mlp_dim, channels_mlp_dim)
    return Architecture(spec=spec, num_classes=num_classes, resolution=side * patch)


def check_compatible(
    expected: Mapping[str, Any], flat: Mapping[str, np.ndarray], source: str, model_name: str
) -> None:
    """Refuse shape mismatches, missing keys and unexpected keys, naming the first offender."""
    expected_flat = {
        "/".join(keys): tuple(leaf.shape)
        for keys, leaf in traverse_util.flatten_dict(expected).items()
    }
    for key, want in sorted(expected_flat.items(), key=lambda item: _input_to_output(item[0])):
        if key in flat and tuple(flat[key].shape) != want:
            raise CheckpointMismatch(
                f"{source}: {key!r} has shape {tuple(flat[key].shape)} but {model_name} "
                f"expects {want}"
            )
    missing = sorted(set(expected_flat) - set(flat))
    if missing:
        raise CheckpointMismatch(
            f"{source} lacks {len(missing)} parameter(s) of {model_name}, first {missing[0]!r}"
        )
    unexpected = sorted(set(flat) - set(expected_flat))
    if unexpected:
        raise CheckpointMismatch(
            f"{source} has {len(unexpected)} parameter(s) that {model_name} does not, "
            f"first {unexpected[0]!r}"
        )


def _input_to_output(key: str) -> tuple[int, bool, str]:
    """Order keys as data flows (stem, blocks by number, head; kernels first) so errors
    name the most telling difference."""
    top = key.split("/")[0]
    block = -1 if top == "stem" else 1 << 30
    if top.startswith("MixerBlock_"):
        block = int(top.removeprefix("MixerBlock_"))
    return (block, not key.endswith("kernel"), key)


def read_checked(
    path: str | os.PathLike, variant: str | None = None
) -> tuple[dict[str, np.ndarray], Architecture]:
    """Read an npz and verify it is exactly one Mixer's parameters: (flat arrays, architecture).

    The architecture comes from the shapes unless ``variant`` is given; then the file must
    be exactly that variant, and a difference is refused naming the key and both shapes.
    """
    flat = read_npz(path)
    arch = infer_architecture(flat, str(path))
    if variant is not None:
        # Same token count, the requested patch size: shape differences then name the key.
        spec = parse_variant(variant)
        side = arch.resolution // arch.spec.patch_size
        arch = Architecture(spec, arch.num_classes, side * spec.patch_size)
    model = create_model(arch.spec, num_classes=arch.num_classes)
    check_compatible(abstract_params(model, arch.resolution), flat, str(path), arch.spec.name)
    return flat, arch


def _as_tree(flat: Mapping[str, np.ndarray]) -> Params:
    """'/'-joined keys -> the nested parameter tree, float32."""
    return traverse_util.unflatten_dict(
        {tuple(k.split("/")): np.asarray(v, dtype=np.float32) for k, v in flat.items()}
    )


def load_params(path: str | os.PathLike, expected: Mapping[str, Any]) -> Params:
    """Parameters to start a run from: an .npz (official layout) or a finished run
    directory's params.npz, checked against the run's (abstract) parameter tree."""
    path = Path(path)
    if path.is_dir():
        if not (path / "params.npz").exists():
            raise CheckpointError(
                f"{path} is a directory without params.npz: not a finished mixer run"
            )
        path = path / "params.npz"
    flat = read_npz(path)
    check_compatible(expected, flat, str(path), "this run's model")
    return _as_tree(flat)


def load_pretrained(
    path: str | os.PathLike, variant: str | None = None, *, dtype: str = "float32"
) -> Pretrained:
    """Load an official-layout ``.npz`` (Google's or ours) as a ready-to-run model.

    The architecture is inferred from the array shapes; with ``variant`` the file must
    match it exactly. ``dtype='bfloat16'`` computes in bfloat16 with float32 weights.
    """
    flat, arch = read_checked(path, variant)
    params = _as_tree(flat)
    model = create_model(arch.spec, num_classes=arch.num_classes, dtype=dtype)
    return Pretrained(model=model, params=params, architecture=arch)

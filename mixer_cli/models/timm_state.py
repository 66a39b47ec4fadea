"""timm's state dicts <-> our flat parameters, for every family timm also defines.

A family whose design timm has (the Mixer, the ViT, gMLP, ResMLP) gives its `Family` a
`TimmLayout`: which state dicts are its (by their keys), and the renaming (and
transposing) both ways. The file side (safetensors, metadata, the hub's config.json) is
`weights.timm`'s; this module picks the family and folds timm's input normalisation into
the patch embedding, so every checkpoint takes mixer's [-1, 1] inputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import CheckpointError, CheckpointMismatch

# Inputs in [-1, 1] are (x01 - 0.5) / 0.5: what mixer feeds every model.
MIXER_MEAN = MIXER_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TimmLayout:
    """One family's parameters as timm names them."""

    design: str  # what messages call it ("MLP-Mixer")
    keys: str  # the layout in brief, for messages
    # timm state dict keys -> whether they are this family's
    owns: Callable[[Collection[str]], bool]
    # (timm state dict, name for messages) -> our flat arrays; refuses a key with no place
    from_timm: Callable[[Mapping[str, np.ndarray], str], dict[str, np.ndarray]]
    # our flat arrays -> timm's state dict (for inputs normalised 0.5/0.5)
    to_timm: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    stem: str = "stem"  # our name of the linear patch embedding ([P, P, 3, C] kernel, bias)
    # our flat arrays -> what a state dict cannot hold, for the file's metadata (the ViT's
    # attention heads; `weights.timm.METADATA`), which the family's `load` reads back
    recorded: Callable[[Mapping[str, np.ndarray]], dict[str, Any]] | None = None


def torch_to_ours(name: str, value: Any, key: str, source: str, stem: str = "stem") -> np.ndarray:
    """timm's tensor `key` as our array `name`: the patch embedding's conv OIHW -> HWIO, a
    Linear's weight [out, in] -> a Dense kernel [in, out], anything else as it is."""
    value = np.asarray(value, dtype=np.float32)
    if name == f"{stem}/kernel":
        if value.ndim != 4:
            raise CheckpointMismatch(
                f"{source}: {key!r} has shape {value.shape}, expected [D, 3, P, P]"
            )
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return value.T if name.endswith("/kernel") else value  # Linear [out, in] -> Dense [in, out]


def ours_to_torch(key: str, value: np.ndarray, stem: str = "stem") -> np.ndarray:
    """Our array `key` as timm holds it (the inverse of `torch_to_ours`)."""
    if key == f"{stem}/kernel":
        return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return value.T if key.endswith("/kernel") else value


@dataclass(frozen=True)
class ModuleNames:
    """timm's names <-> ours where timm's are `blocks.N.MODULE.{weight,bias}` and
    `TOP_MODULE.{weight,bias}` (the Mixer's, gMLP's): `block` our blocks' prefix
    ('MixerBlock' for MixerBlock_N), `in_block` timm's module in a block -> ours, `top`
    the modules outside blocks -> ours, `norms` our norm modules (a weight is their
    `scale`, not a `kernel`), `what` the model as a refusal names it ('a gMLP')."""

    block: str
    in_block: Mapping[str, str]
    top: Mapping[str, str]
    norms: Collection[str]
    what: str

    def ours(self, key: str) -> str | None:
        """Our name for one timm key, or None if the key is no part of the model."""
        module, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            return None
        block = _TIMM_BLOCK.match(module)
        if block:
            inner = self.in_block.get(block.group(2))
            prefix = f"{self.block}_{int(block.group(1))}/{inner}" if inner else None
        else:
            prefix = self.top.get(module)
        if prefix is None:
            return None
        if leaf == "bias":
            return f"{prefix}/bias"
        return f"{prefix}/{'scale' if prefix.rpartition('/')[2] in self.norms else 'kernel'}"

    def timm(self, key: str) -> str:
        """timm's name for one of our keys (the inverse of `ours`); refuses one it has none
        for."""
        module, _, leaf = key.rpartition("/")
        block = re.match(rf"^{self.block}_(\d+)/(.+)$", module)
        if block:
            inner = {v: k for k, v in self.in_block.items()}.get(block.group(2))
            prefix = f"blocks.{block.group(1)}.{inner}" if inner else None
        else:
            prefix = {v: k for k, v in self.top.items()}.get(module)
        if prefix is None or leaf not in ("kernel", "scale", "bias"):
            raise CheckpointMismatch(
                f"{key!r} is not a parameter of {self.what}: timm has no name for it"
            )
        return f"{prefix}.{'bias' if leaf == 'bias' else 'weight'}"


_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def renamed_from_timm(
    state: Mapping[str, Any],
    source: str,
    *,
    design: str,
    layout: str,
    our_name: Callable[[str], str | None],
) -> dict[str, np.ndarray]:
    """A timm state dict -> our flat arrays, each key renamed by `our_name` (None: no
    place in the layout, refused naming the first such key in file order and `layout`)
    and transposed by `torch_to_ours`."""
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = our_name(key)
        if name is None:
            raise CheckpointMismatch(
                f"{source} is not a timm {design} state dict: key {key!r} does not fit its "
                f"layout ({layout})"
            )
        if name in flat:
            raise CheckpointMismatch(
                f"{source}: key {key!r} names {name!r} a second time (two names for one "
                "tensor in one state dict, e.g. timm's and Facebook's mixed)"
            )
        flat[name] = np.ascontiguousarray(torch_to_ours(name, value, key, source))
    return flat


def renamed_to_timm(
    flat: Mapping[str, np.ndarray], timm_name: Callable[[str], str]
) -> dict[str, np.ndarray]:
    """Our flat arrays -> timm's state dict, each key renamed by `timm_name` (which refuses
    a key timm has no name for) and transposed by `ours_to_torch`."""
    return {timm_name(k): np.ascontiguousarray(ours_to_torch(k, v)) for k, v in flat.items()}


def is_timm_state(flat: Mapping[str, Any]) -> bool:
    """Whether arrays are named as a PyTorch state dict ('blocks.0.norm1.weight'), not as
    ours ('MixerBlock_0/LayerNorm_0/scale')."""
    return bool(flat) and not any("/" in key for key in flat)


def layouts() -> dict[str, TimmLayout]:
    """{family: its timm layout} of the families that have one."""
    from mixer_cli.models import registry

    return {n: registry.get(n).timm for n in registry.families_that("timm")}


def from_state(
    state: Mapping[str, np.ndarray],
    source: str,
    mean: Sequence[float] = MIXER_MEAN,
    std: Sequence[float] = MIXER_STD,
) -> dict[str, np.ndarray]:
    """A timm state dict -> our flat parameters for [-1, 1] inputs, of whichever family's
    layout its keys are; refuses one of no family's layout, naming the first key that fits
    none (in file order) and the layouts there are."""
    found = layouts()
    for layout in found.values():
        if layout.owns(state.keys()):
            flat = layout.from_timm(state, source)
            kernel, bias = f"{layout.stem}/kernel", f"{layout.stem}/bias"
            if kernel not in flat or bias not in flat:
                raise CheckpointMismatch(f"{source} has no patch embedding: not a timm model")
            flat[kernel], flat[bias] = fold_normalisation(
                flat[kernel], flat[bias], mean, std, source
            )
            return flat
    described = "; ".join(f"{layout.design}: {layout.keys}" for layout in found.values())
    first = next(iter(state), "")
    raise CheckpointMismatch(
        f"{source} is not a timm state dict of a family mixer runs: key {first!r} does not "
        f"fit its layout ({described})"
    )


def to_state(family: str, flat: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Our flat parameters of `family` -> timm's state dict, refusing a family timm lacks."""
    found = layouts()
    if family not in found:
        raise CheckpointMismatch(
            f"{source} is a {family}: timm's layout holds {', '.join(found)} checkpoints only"
        )
    return found[family].to_timm({k: np.asarray(v, np.float32) for k, v in flat.items()})


def save(family: str, params: Mapping[str, Any], path: str | os.PathLike, *, gelu: str) -> Path:
    """Parameters (a tree or flat) of `family` written as timm's safetensors, atomically;
    the metadata records the GELU form, the 0.5/0.5 normalisation and what the layout
    records besides (a ViT's heads), so mixer reads the file back exactly and timm loads
    its tensors as they are."""
    from mixer_cli.weights import timm as timm_files
    from mixer_cli.weights.arrays import flat_params

    flat = flat_params(params)
    state = to_state(family, flat, str(path))
    layout = layouts()[family]
    extra = layout.recorded({k: np.asarray(v) for k, v in flat.items()}) if layout.recorded else {}
    return timm_files.write_state(
        state, path, gelu=gelu, mean=MIXER_MEAN, std=MIXER_STD, recorded=extra
    )


def write(params: Mapping[str, Any], path: str | os.PathLike, *, gelu: str = "tanh") -> Path:
    """`mixer_cli.write_safetensors`: parameters of any family timm also defines (read off
    the arrays) written as timm's state dict (`save`)."""
    from mixer_cli.models import registry
    from mixer_cli.weights.arrays import flat_params

    flat = flat_params(params)
    return save(registry.family_of(flat, str(path)).name, flat, path, gelu=gelu)


def fold_normalisation(
    kernel: np.ndarray,
    bias: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    source: str = "input normalisation",
) -> tuple[np.ndarray, np.ndarray]:
    """A patch embedding for [-1, 1] inputs x from one for (x01 - mean) / std, x01 = (x + 1) / 2.

    stem((x01 - m) / s) = sum W (x + 1 - 2m) / (2s) + b: the kernel scaled by 1 / (2s)
    per input channel, the bias shifted by the kernel's response to (1 - 2m) / (2s).
    """
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean64.shape != (3,) or std64.shape != (3,) or np.any(std64 <= 0):
        raise CheckpointError(
            f"{source}: input normalisation mean={mean} std={std}: need 3 values each, std > 0"
        )
    if np.allclose(mean64, MIXER_MEAN) and np.allclose(std64, MIXER_STD):
        return kernel, bias
    k64 = kernel.astype(np.float64)  # [P, P, 3, C]
    shift = np.einsum("pqcd,c->d", k64, (1 - 2 * mean64) / (2 * std64))
    folded = k64 / (2 * std64)[None, None, :, None]
    return folded.astype(np.float32), (bias.astype(np.float64) + shift).astype(np.float32)

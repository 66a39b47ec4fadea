"""The ViT in timm's state dicts (`timm/models/vision_transformer.py`'s VisionTransformer).

timm's keys, as its own converter of Google's npz files (`_load_weights`) maps them:
``cls_token`` [1, 1, D], ``pos_embed`` [1, T, D], ``patch_embed.proj`` (a P x P stride-P
conv, OIHW), ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` (Linear
weights [out, in]; ``qkv`` the query, key and value maps stacked, [3D, D]), ``norm``,
``head``, and older timm's ``pre_logits.fc`` (the Dense + tanh representation layer).

Two things a state dict does not say: the number of attention heads (timm takes them from
the model's config; a file mixer writes records them in its metadata, `Family.load` applies
them, else they are the ViT size's with these widths, else 64 wide as in timm's ViTs) and
the pooling. The class token's output is read as ``token``; a state dict without
``cls_token`` is Google's ``gap``: the final ``norm`` on every token, then their mean,
which is timm's ``class_token=False, global_pool='avg', fc_norm=False``. timm's default
for ``avg`` (``fc_norm``: the mean first, then a LayerNorm) is another model, refused.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models.timm_state import TimmLayout, ours_to_torch, torch_to_ours
from mixer_cli.models.vit import SIZES
from mixer_cli.models.vit_checkpoint import ATTENTION, POSEMB

LAYOUT = (
    "cls_token, pos_embed, patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,"
    "mlp.fc1,mlp.fc2}.*, norm.*, pre_logits.fc.*, head.*"
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# timm module inside a block -> ours (the fused qkv and the attention's proj apart).
_IN_BLOCK = {
    "norm1": "LayerNorm_0",
    "norm2": "LayerNorm_2",
    "mlp.fc1": "MlpBlock_3/Dense_0",
    "mlp.fc2": "MlpBlock_3/Dense_1",
    "attn.proj": f"{ATTENTION}/out",
}
_TOP = {
    "patch_embed.proj": "embedding",
    "norm": "Transformer/encoder_norm",
    "pre_logits.fc": "pre_logits",
    "head": "head",
}
_PARAMS = {"cls_token": "cls", "pos_embed": POSEMB}
HEAD_WIDTH = 64  # timm's ViTs' attention head width (all but ViT-H's 80)


def owns(keys: Collection[str]) -> bool:
    """A timm ViT's keys: self-attention with the fused qkv map in its blocks."""
    return any(".attn.qkv." in key for key in keys)


def heads_of(flat: Mapping[str, np.ndarray]) -> int:
    """The attention heads of a ViT whose state dict does not say: those of the ViT size with
    its depth and widths, else 64-wide heads (timm's), else one."""
    width = flat["embedding/kernel"].shape[-1] if "embedding/kernel" in flat else 0
    mlp_key = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"
    mlp = flat[mlp_key].shape[-1] if mlp_key in flat else 0
    layers = sum(
        1 for k in flat if re.fullmatch(r"Transformer/encoderblock_\d+/LayerNorm_0/scale", k)
    )
    for size_layers, size_width, size_mlp, heads in SIZES.values():
        if (size_layers, size_width, size_mlp) == (layers, width, mlp):
            return heads
    return width // HEAD_WIDTH if width and width % HEAD_WIDTH == 0 else 1


def _refuse(source: str, key: str, why: str = "") -> CheckpointMismatch:
    return CheckpointMismatch(
        f"{source} is not a timm ViT state dict mixer runs: key {key!r} "
        + (why or f"does not fit its layout ({LAYOUT})")
    )


def from_timm(state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A timm ViT state dict -> our flat parameters (for timm's normalisation), naming the
    first key (in file order) that has no place in the layout."""
    flat: dict[str, np.ndarray] = {}
    fused: dict[str, np.ndarray] = {}  # block prefix + leaf -> the qkv array
    for key, value in state.items():
        value = np.asarray(value, dtype=np.float32)
        if key.startswith("fc_norm."):
            raise _refuse(
                source,
                key,
                "is timm's fc_norm, a LayerNorm after the tokens' mean (global_pool='avg'): "
                "another model than Google's gap ViT (the encoder norm on every token, then "
                "the mean), which mixer runs (timm: fc_norm=False)",
            )
        if key in _PARAMS:
            flat[_PARAMS[key]] = value
            continue
        module, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            raise _refuse(source, key)
        block = _BLOCK.match(module)
        if block and block.group(2) == "attn.qkv":
            fused[f"Transformer/encoderblock_{int(block.group(1))}/{leaf}"] = value
            continue
        inner = _IN_BLOCK.get(block.group(2)) if block else None
        prefix = f"Transformer/encoderblock_{int(block.group(1))}/{inner}" if inner else None
        prefix = prefix if block else _TOP.get(module)
        if prefix is None:
            raise _refuse(source, key)
        is_norm = "LayerNorm" in prefix or prefix.endswith("encoder_norm")
        name = f"{prefix}/{'bias' if leaf == 'bias' else 'scale' if is_norm else 'kernel'}"
        flat[name] = torch_to_ours(name, value, key, source, stem="embedding")
    _check_class_token(flat, state, source)
    heads = heads_of(flat)
    for name, value in fused.items():
        _unfuse(flat, name, value, heads, source)
    out = f"/{ATTENTION}/out/kernel"
    for name in [k for k in flat if k.endswith(out)]:
        flat[name] = flat[name].reshape(heads, -1, flat[name].shape[-1])  # [D, D] -> [H, K, D]
    return {k: np.ascontiguousarray(v) for k, v in flat.items()}


def _check_class_token(
    flat: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray], source: str
) -> None:
    """Refuse position embeddings that leave the class token out (timm's no_embed_class)."""
    if "cls" not in flat or POSEMB not in flat or flat[POSEMB].ndim != 3:
        return
    rows = flat[POSEMB].shape[1]
    if rows > 1 and int(np.sqrt(rows)) ** 2 == rows:
        raise _refuse(
            source,
            "pos_embed",
            f"has {rows} rows, a square grid without the class token's (timm's "
            "no_embed_class): Google's ViT embeds the class token's position too",
        )


def _unfuse(
    flat: dict[str, np.ndarray], name: str, value: np.ndarray, heads: int, source: str
) -> None:
    """One block's fused qkv weight [3D, D] (or bias [3D]) -> our query, key and value."""
    prefix, _, leaf = name.rpartition("/")
    if value.shape[0] % 3 or (leaf == "weight" and value.ndim != 2):
        raise CheckpointMismatch(
            f"{source}: the fused qkv {leaf} of {prefix} has shape {value.shape}, "
            "expected [3D, D] / [3D]"
        )
    for part, chunk in zip(("query", "key", "value"), np.split(value, 3), strict=True):
        width = chunk.shape[0]
        if width % heads:
            raise CheckpointMismatch(f"{source}: {heads} heads do not divide {prefix}'s width")
        if leaf == "weight":  # [D_out, D_in] -> [D_in, H, K]
            flat[f"{prefix}/{ATTENTION}/{part}/kernel"] = chunk.T.reshape(-1, heads, width // heads)
        else:
            flat[f"{prefix}/{ATTENTION}/{part}/bias"] = chunk.reshape(heads, width // heads)


def to_timm(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat parameters -> a timm ViT state dict (query, key, value fused into qkv)."""
    top = {v: k for k, v in _TOP.items()}
    inner = {v: k for k, v in _IN_BLOCK.items()}
    params = {v: k for k, v in _PARAMS.items()}
    state: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        value = np.asarray(value, np.float32)
        if key in params:
            state[params[key]] = value
            continue
        module, _, leaf = key.rpartition("/")
        torch_leaf = "bias" if leaf == "bias" else "weight"
        block = re.match(r"^Transformer/encoderblock_(\d+)/(.+)$", module)
        if block and block.group(2).startswith(f"{ATTENTION}/") and "/out" not in module:
            continue  # query, key, value: fused below
        if key.endswith(f"{ATTENTION}/out/kernel"):
            value = value.reshape(-1, value.shape[-1])  # [H, K, D] -> [D_in, D_out]
        name = (
            f"blocks.{block.group(1)}.{inner[block.group(2)]}"
            if block and block.group(2) in inner
            else top.get(module)
        )
        if name is None or leaf not in ("kernel", "scale", "bias"):
            raise CheckpointMismatch(
                f"{key!r} is not a parameter of a ViT: timm has no name for it"
            )
        state[f"{name}.{torch_leaf}"] = ours_to_torch(key, value, stem="embedding")
    blocks = sorted(
        {int(m.group(1)) for k in flat if (m := re.match(r"^Transformer/encoderblock_(\d+)/", k))}
    )
    for i in blocks:
        attn = f"Transformer/encoderblock_{i}/{ATTENTION}"
        kernels = [
            np.asarray(flat[f"{attn}/{p}/kernel"], np.float32) for p in ("query", "key", "value")
        ]
        biases = [
            np.asarray(flat[f"{attn}/{p}/bias"], np.float32) for p in ("query", "key", "value")
        ]
        state[f"blocks.{i}.attn.qkv.weight"] = np.concatenate(
            [k.reshape(k.shape[0], -1).T for k in kernels]
        )
        state[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([b.reshape(-1) for b in biases])
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def recorded(flat: Mapping[str, np.ndarray]) -> dict[str, int]:
    """What a timm state dict cannot hold, for its file's metadata: the attention heads."""
    key = f"Transformer/encoderblock_0/{ATTENTION}/query/kernel"
    return {"attention_heads": int(flat[key].shape[1])} if key in flat else {}


LAYOUT_OF_VIT = TimmLayout(
    design="ViT",
    keys=LAYOUT,
    owns=owns,
    from_timm=from_timm,
    to_timm=to_timm,
    stem="embedding",
    recorded=recorded,
)

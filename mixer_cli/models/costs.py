"""What a model costs: parameters and FLOPs, measured rather than typed in.

FLOPs come from XLA's cost analysis of the forward pass, so they count what the
program does (matmuls as 2 FLOPs per multiply-add, plus the elementwise
work) and stay right when the model changes. Nothing is allocated: parameters
and inputs are abstract shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.models import MixerSpec, MlpMixer, abstract_params, count_params, create_model


def forward_flops(model: MlpMixer, resolution: int, batch_size: int = 1) -> float:
    """FLOPs of one forward pass per image (no compilation, no memory)."""
    params = abstract_params(model, resolution)
    images = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
    return model_flops(lambda p, x: model.apply({"params": p}, x)[0], params, images) / batch_size


def measure(model: Any, resolution: int) -> dict[str, Any]:
    """{'params', 'gflops'} of any family's module at a resolution: what `mixer info`
    shows for a model outside the Mixer table (a ResNet, a hybrid)."""
    params = count_params(abstract_params(model, resolution))
    return {"params": params, "gflops": forward_flops(model, resolution) / 1e9}


def model_flops(fn: Any, *args: Any) -> float:
    """FLOPs of one call of `fn` (plain or jitted) on arguments of these shapes.

    Counted by XLA's cost analysis of the lowered program for the CPU backend, whatever
    the devices: the unpartitioned program counts the model's work once on any mesh (a
    compiled per-device program also counts what every device repeats, such as the
    replicated optimizer update), and JAX's CUDA plugin analyses only compiled programs,
    where cuBLAS calls count zero (B/16's train step: 6 GFLOP per image of 76).
    """
    fn = getattr(fn, "__wrapped__", fn)  # a jitted function's shardings name other devices
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        analysis = jax.jit(fn).lower(*shapes).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returns one dict per device program
        analysis = analysis[0]
    return float(analysis["flops"])


def describe(spec: MixerSpec, resolution: int, num_classes: int = 0) -> dict[str, Any]:
    """One row of `mixer info`: the architecture, its parameter count and GFLOPs per image."""
    spec.check_resolution(resolution)

    def params(s: MixerSpec) -> int:
        return count_params(abstract_params(create_model(s, num_classes=num_classes), resolution))

    def flops(s: MixerSpec) -> float:
        return forward_flops(create_model(s, num_classes=num_classes), resolution)

    return {
        "variant": spec.name,
        "layers": spec.num_blocks,
        "patch": spec.patch_size,
        "hidden_dim": spec.hidden_dim,
        "seq_len": spec.seq_len(resolution),
        "channels_mlp_dim": spec.channels_mlp_dim,
        "tokens_mlp_dim": spec.tokens_mlp_dim,
        "num_classes": num_classes,
        "resolution": resolution,
        "params": by_blocks(params, spec),
        "gflops": by_blocks(flops, spec) / 1e9,
    }


def by_blocks(count: Callable[[MixerSpec], Any], spec: MixerSpec) -> Any:
    """count(spec), measured on the same model with one and with two blocks.

    The blocks are identical, so anything summed over the model is a + L * b: parameters
    exactly, XLA's FLOP count to within 1e-5 of the whole model's. Tracing 3 blocks
    instead of L (H/14 has 32) made `mixer info` for all variants 3.6x faster (18.4 s ->
    5.1 s on a 2-core CPU).
    """
    if spec.num_blocks <= 2:
        return count(spec)
    one, two = (count(dataclasses.replace(spec, num_blocks=n)) for n in (1, 2))
    return one + (spec.num_blocks - 1) * (two - one)


def count_by_blocks(create: Callable[[Any], Any], spec: Any, resolution: int) -> dict[str, Any]:
    """{'params', 'gflops'} of the module `create(spec)` at `resolution`, measured on it with
    one and two blocks (`by_blocks`): what `mixer info` shows for a family's variant."""

    def cost(s: Any) -> np.ndarray:
        row = measure(create(s), resolution)
        return np.array([row["params"], row["gflops"]], np.float64)

    params, gflops = by_blocks(cost, spec)
    return {"params": round(params), "gflops": float(gflops)}

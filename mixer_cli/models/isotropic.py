"""What the isotropic families (the Mixer, gMLP, ResMLP, the ViT) share, written once.

Each is a patch stem, L identical blocks whose stochastic depth grows linearly from 0 at
the first to `stoch_depth` at the last, a final norm, the tokens' mean and a head.
`trunk` runs that inside a module's compact ``__call__``, given the stem, a block factory
and the final norm, and fills ``out`` the way every family returns it. Modules are
created in the caller's scope in the order they always were, so auto-names
(``MixerBlock_{i}``) and initialisation are the families' own. Also here: the options
every family's constructor refuses (`check_options`), the family modules' variant check
(`checked_spec`) and the options their `build` passes (`run_options`). No jit, I/O or logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.head import classifier_head

GELU_FORMS: tuple[str, ...] = ("tanh", "exact")  # Google's code's approximation; timm's erf
Layer = Callable[[jax.Array], jax.Array]
# (block index, its stochastic-depth rate) -> the block, called as block(x, train=train)
BlockFactory = Callable[[int, float], Callable[..., jax.Array]]


def check_tiles(images: jax.Array, patch: int) -> None:
    """Refuse images that are not [B, H, W, C] with H and W multiples of the patch size
    (what a patch embedding needs), before tracing reaches a shape error."""
    if images.ndim != 4 or images.shape[1] % patch or images.shape[2] % patch:
        raise ConfigError(
            f"images of shape {tuple(images.shape)} do not tile into {patch}x{patch} patches; "
            "expected [batch, height, width, channels] with height and width multiples of "
            f"{patch}"
        )


def drop_rates(stoch_depth: float, num_blocks: int) -> list[float]:
    """Each block's stochastic-depth rate: linear from 0 at the first to `stoch_depth`."""
    return [stoch_depth * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def run_blocks(
    x: jax.Array, block: BlockFactory, num_blocks: int, stoch_depth: float, *, train: bool
) -> tuple[jax.Array, list[jax.Array]]:
    """x through the blocks `block(i, rate)`, created in order; (x, each block's output)."""
    outputs = []
    for i, rate in enumerate(drop_rates(stoch_depth, num_blocks)):
        x = block(i, rate)(x, train=train)
        outputs.append(x)
    return x, outputs


def pooled_head(
    pre_logits: jax.Array, out: dict[str, jax.Array], *, num_classes: int, bias_init: float, dtype
) -> jax.Array:
    """out['pre_logits'] = pre_logits; the head on them (`classifier_head`): the logits."""
    out["pre_logits"] = pre_logits
    return classifier_head(
        pre_logits, out, num_classes=num_classes, bias_init=bias_init, dtype=dtype
    )


class _Trunk(Protocol):
    patch_size: int
    num_blocks: int
    num_classes: int
    stoch_depth: float
    head_bias_init: float
    dtype: Any


def trunk(
    model: _Trunk,
    images: jax.Array,
    *,
    stem: Layer,
    block: BlockFactory,
    final_norm: Layer,
    train: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:  # images: [B, H, W, 3]
    """Call inside `model`'s compact __call__: stem -> blocks -> final norm -> mean over the
    tokens -> head. Returns ``(logits, out)`` with ``stem``, ``block_{i}``, ``tokens`` (after
    the final norm, [B, S, D]: what a dense head reads), ``pre_logits`` ([B, D], their mean)
    and ``logits``."""
    check_tiles(images, model.patch_size)
    out: dict[str, jax.Array] = {}
    x = out["stem"] = stem(images)  # [B, S, D]
    x, blocks = run_blocks(x, block, model.num_blocks, model.stoch_depth, train=train)
    out.update({f"block_{i}": y for i, y in enumerate(blocks)})
    x = out["tokens"] = final_norm(x)
    logits = pooled_head(
        jnp.mean(x.astype(jnp.float32), axis=1),  # [B, D]
        out,
        num_classes=model.num_classes,
        bias_init=model.head_bias_init,
        dtype=model.dtype,
    )
    return logits, out


def check_options(*, num_classes: int, dropout: float, stoch_depth: float, gelu: str) -> None:
    """Refuse constructor options no family can be built with."""
    if gelu not in GELU_FORMS:
        raise ConfigError(f"model.gelu: unknown {gelu!r}; choices: {', '.join(GELU_FORMS)}")
    if num_classes < 0:
        raise ConfigError(f"number of classes must be >= 0 (0 = no head), got {num_classes}")
    for name, rate in (("dropout", dropout), ("stochastic depth", stoch_depth)):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{name} rate must be in [0, 1), got {rate}")


def checked_module(
    module: Callable[..., Any],
    dims: dict[str, Any],
    *,
    num_classes: int = 0,
    dropout: float = 0.0,
    stoch_depth: float = 0.0,
    head_bias_init: float = 0.0,
    dtype: Any = jnp.float32,
    gelu: str = "tanh",
) -> Any:
    """`module(**dims, options...)` after `check_options`: what every family's `create_*`
    does with the architecture `dims` its spec gives and the run's options."""
    check_options(num_classes=num_classes, dropout=dropout, stoch_depth=stoch_depth, gelu=gelu)
    return module(
        **dims,
        num_classes=num_classes,
        dropout=dropout,
        stoch_depth=stoch_depth,
        head_bias_init=head_bias_init,
        dtype=dtype,
        gelu=gelu,
    )


def compute_dtype(name: Any) -> Any:
    """``'float32'`` or ``'bfloat16'`` (or the dtype itself) -> a jnp dtype."""
    allowed = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if not isinstance(name, str):
        name = jnp.dtype(name).name
    if name not in allowed:
        raise ConfigError(f"unknown dtype {name!r}: expected one of {', '.join(allowed)}")
    return allowed[name]


def run_options(m: Any, num_classes: int, head_bias: float) -> dict[str, Any]:
    """The constructor options every family's `build` takes from the model config `m`."""
    return {
        "num_classes": num_classes,
        "dropout": m.dropout,
        "stoch_depth": m.stoch_depth,
        "head_bias_init": head_bias,
        "dtype": compute_dtype(m.dtype),
        "gelu": m.gelu,
    }


def checked_spec(parse: Callable[[str], Any], m: Any, *, no_grid_factor: str = "") -> Any:
    """parse(m.variant), its resolution checked; with `no_grid_factor` (why) the family
    refuses model.grid_factor other than 1 (only a plain Mixer widens its token MLPs)."""
    spec = parse(m.variant)
    spec.check_resolution(m.resolution)
    if no_grid_factor and m.grid_factor != 1:
        raise ConfigError(no_grid_factor)
    return spec

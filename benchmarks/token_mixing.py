"""Four ways to write the token-mixing MLP, timed in one process, alternating.

    python benchmarks/token_mixing.py --variant S/32 --batch-size 32
    python benchmarks/token_mixing.py --variant B/16 --batch-size 8

- swapaxes: transpose [B, S, C] -> [B, C, S], nn.Dense over S, transpose back (the
  reference code's formulation, and mixer's before the speed work);
- einsum: `einsum('bsc,sf->bfc')`, leaving the layout to XLA;
- batched (mixer's `TokenDense`): one batched matmul with the kernel broadcast over the
  batch, so neither activations nor gradients are transposed;
- token-major: the whole trunk in [S, B, C], so token mixing is one plain matmul
  [F, S] x [S, B*C] (channel mixing is unchanged: a matmul over the last axis).
Each builds the whole model (stem, blocks, head); forward = logits, grad = value_and_grad
of softmax cross-entropy (no optimizer). Median images/s over alternating windows.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.models.mixer import TokenDense
from mixer_cli.models.variants import MixerSpec, parse_variant
from mixer_cli.train.steps import cross_entropy
from mixer_cli.train.throughput import time_window

FORMS = ("swapaxes", "einsum", "batched", "token-major")


class EinsumDense(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[1], self.features))
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jnp.einsum("bsc,sf->bfc", x, k) + b[:, None]


class TokenMajorDense(nn.Module):
    """Over the token axis of token-major activations [S, B, C]: one plain matmul
    [F, S] x [S, B*C]."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[0], self.features))
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jax.lax.dot_general(k, x, (((0,), (0,)), ((), ()))) + b[:, None, None]


class Model(nn.Module):
    spec: MixerSpec
    form: str

    def token_mlp(self, y: jax.Array) -> jax.Array:
        s, d = y.shape[1], self.spec.tokens_mlp_dim
        if self.form == "swapaxes":
            y = nn.Dense(s)(nn.gelu(nn.Dense(d)(y.swapaxes(1, 2))))
            return y.swapaxes(1, 2)
        if self.form == "token-major":
            s = y.shape[0]
            return TokenMajorDense(s)(nn.gelu(TokenMajorDense(d)(y)))
        dense = EinsumDense if self.form == "einsum" else TokenDense
        return dense(s)(nn.gelu(dense(d)(y)))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p, spec = self.spec.patch_size, self.spec
        x = nn.Conv(spec.hidden_dim, (p, p), strides=p)(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        token_axis = 1
        if self.form == "token-major":
            x, token_axis = x.transpose(1, 0, 2), 0
        for _ in range(spec.num_blocks):
            x = x + self.token_mlp(nn.LayerNorm(epsilon=1e-6)(x))
            y = nn.Dense(spec.channels_mlp_dim)(nn.LayerNorm(epsilon=1e-6)(x))
            x = x + nn.Dense(x.shape[-1])(nn.gelu(y))
        return nn.Dense(1000)(nn.LayerNorm(epsilon=1e-6)(x).mean(token_axis))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--forms", default=",".join(FORMS), help="comma-separated subset")
    args = parser.parse_args()

    spec, b = parse_variant(args.variant), args.batch_size
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (b, args.resolution, args.resolution, 3)), jnp.float32)
    y = jax.nn.one_hot(rng.integers(0, 1000, b), 1000)
    steps = {}
    for form in args.forms.split(","):
        model = Model(spec, form)
        params = model.init(jax.random.key(0), x[:1])

        def loss(p: dict, model: Model = model) -> jax.Array:
            return cross_entropy(model.apply(p, x), y, "softmax")

        steps[f"forward {form}"] = partial(jax.jit(model.apply), params, x)
        steps[f"grad {form}"] = partial(jax.jit(jax.value_and_grad(loss)), params)
    counts = {}
    for name, step in steps.items():
        time_window(step, 2)
        counts[name] = max(1, round(args.seconds / time_window(step, 1)))
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.rounds):
        for name in list(steps)[:: 1 if round_ % 2 == 0 else -1]:
            rates[name].append(counts[name] * b / time_window(steps[name], counts[name]))
    print(f"{args.variant} @ {args.resolution}px, batch {b}: img/s, median of {args.rounds}")
    for name, r in rates.items():
        print(f"  {name:18s} {statistics.median(r):8.2f}  ({', '.join(f'{v:.1f}' for v in r)})")


if __name__ == "__main__":
    main()

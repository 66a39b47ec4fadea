"""Load an MLP-Mixer checkpoint in Google's .npz layout and run it.

    python examples/checkpoints.py                  # offline: makes an N/16 checkpoint first
    python examples/checkpoints.py Mixer-B_16.npz   # an official file you downloaded

The architecture (patch, depth, widths, classes, native resolution) is read off
the array shapes. Expected output: the inferred architecture and the top-5
classes of a random image; offline, also "round trip: identical logits".
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

import mixer_cli


def main(path: str | None) -> None:
    if path is None:  # Offline: write our own model in the official layout first.
        model = mixer_cli.create_model("N/16", num_classes=10)
        params = model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
        head = params["head"]["kernel"]  # zero at init: give it values to tell classes apart
        params["head"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(1), head.shape)
        path = str(mixer_cli.write_npz(params, Path(tempfile.mkdtemp()) / "N_16.npz"))
    else:
        params = None

    loaded = mixer_cli.load_pretrained(path)
    arch = loaded.architecture
    print(
        f"{path}: {arch.spec.name}, {arch.spec.num_blocks} blocks, C={arch.spec.hidden_dim}, "
        f"{arch.num_classes} classes, native resolution {loaded.resolution} px"
    )

    r = loaded.resolution
    image = np.random.default_rng(0).uniform(-1, 1, (1, r, r, 3)).astype(np.float32)
    logits = np.asarray(loaded(image))[0]
    print("top-5 classes:", np.argsort(logits)[::-1][:5].tolist())

    if params is not None:
        want, _ = loaded.model.apply({"params": params}, image)
        assert np.array_equal(np.asarray(want)[0], logits)
        print("round trip: identical logits")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

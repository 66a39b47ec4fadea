"""Throughput of the training input pipeline (tf.data on the CPU), in images per second.

    python benchmarks/data_pipeline.py imagenet-like            # 224 px from 500x375 JPEGs
    python benchmarks/data_pipeline.py cifar10 --folder /tmp/cifar  # 32 px, CIFAR-10 JPEGs

Both use the paper's train transform: inception crop, flip, RandAugment(2,15) (--randaug),
all on the host (`--augment-on host`, the default here: the numbers in RESULTS.md); with
`--augment-on device` the host's share of it when training augments on the device (decode,
crop and resize; the rest runs in the train step and is not measured here).

`imagenet-like` writes a folder of JPEGs at ImageNet's typical size (500x375, textured so
they compress like photos) from the CIFAR-10 archive in ../shared/data, once, under
--workdir. `cifar10` reads the extracted archive (`tar xzf cifar10-jpeg.tar.gz -C DIR`).
Timing excludes the first batches (graph building, file cache warm-up) and reports the
median of several windows. Not a test: results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tarfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np

from mixer_cli.core.distributed import make_mesh
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data import Preprocessing, TrainBatches, open_dataset

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def make_imagenet_like(root: Path, count: int) -> Path:
    """`count` 500x375 JPEGs in 10 class folders, upscaled CIFAR images plus sensor-like noise."""
    if root.exists() and len(list(root.glob("train/*/*.jpg"))) >= count:
        return root
    for old in root.glob("train/*/*.jpg"):
        old.unlink()
    rng = np.random.default_rng(0)
    with tarfile.open(ARCHIVE) as archive:
        members = [
            m for m in archive.getmembers() if m.name.endswith(".jpg") and "train/" in m.name
        ]
        for i, member in enumerate(members[:: len(members) // count][:count]):  # all classes
            small = tf.io.decode_jpeg(archive.extractfile(member).read())
            big = tf.image.resize(small, [375, 500], method="bicubic").numpy()
            big = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
            out = root / "train" / Path(member.name).parent.name / f"{i}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tf.io.encode_jpeg(big, quality=90).numpy())
    return root


def measure(batches: TrainBatches, warmup: int, windows: int, steps: int) -> list[float]:
    stream = batches.host_batches()
    for _ in range(warmup):
        next(stream)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            next(stream)
        rates.append(steps * batches.global_batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", choices=["imagenet-like", "cifar10"])
    parser.add_argument("--folder", type=Path, help="extracted CIFAR-10 folder (cifar10 setting)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mixer-bench"))
    parser.add_argument("--batch-size", type=int, default=0, help="default: 64 / 512")
    parser.add_argument("--randaug", default="2,15", help="layers,magnitude; 0,0 = off")
    parser.add_argument("--augment-on", choices=["host", "device"], default="host")
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    layers, magnitude = (int(v) for v in args.randaug.split(","))

    if args.setting == "imagenet-like":
        root = make_imagenet_like(args.workdir / "imagenet-like", 2000)
        pre = Preprocessing(
            224, randaug_layers=layers, randaug_magnitude=magnitude, augment_on=args.augment_on
        )
        batch, steps = args.batch_size or 64, 5
    else:
        if args.folder is None:
            parser.error("cifar10 needs --folder (tar xzf cifar10-jpeg.tar.gz -C DIR)")
        root = args.folder
        pre = Preprocessing(
            32, randaug_layers=layers, randaug_magnitude=magnitude, augment_on=args.augment_on
        )
        batch, steps = args.batch_size or 512, 10
    source = open_dataset(f"folder:{root}")
    batches = TrainBatches(source, source.train_split, pre, batch, seed=0, mesh=make_mesh())
    rates = measure(batches, warmup=3, windows=args.windows, steps=steps)
    print(
        f"{args.setting}: {pre.resolution} px, batch {batch}, crop={pre.crop}, flip, "
        f"randaug({layers},{magnitude}) on the {args.augment_on}, {os.cpu_count()} CPUs: median "
        f"{statistics.median(rates):,.0f} img/s (windows: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()

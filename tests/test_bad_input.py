"""Bad input across every subcommand: exit code 2, one line on stderr naming the problem,
no traceback, and nothing written or damaged (every file under the test's directory,
an earlier run's included, is byte-identical afterwards)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from damage import damage_inside, flip_npz_array_bit, truncate
from datasets import write_image, write_image_folder, write_mask_folder, write_validation_images
from numpy_gmlp import timm_gmlp_state
from numpy_resmlp import resmlp_state_dict
from numpy_timm import timm_state_dict, timm_vit_state_dict
from numpy_vit import google_vit_params
from PIL import Image
from safetensors.numpy import save_file
from test_cli import run_cli

from mixer_cli.models import create_model, registry
from mixer_cli.models.settings import ModelConfig
from mixer_cli.weights.arrays import write_npz

# Each case: (arguments, words the error line must contain). {npz}: a hand-made official
# checkpoint (patch 4, 16 px, 10 classes, a custom size); {n4}: our N/4 at 16 px; {empty},
# {one_class}, {bad_yaml}, {not_mixer}, {vit}, {truncated}, {flipped}: files made below;
# {vit_npz}: Google's ViT layout (patch 4, 16 px, 10 classes, a custom size); {resmlp}: a
# timm ResMLP state dict (patch 4, 2 blocks, 16 px, 10 classes); {gmlp}: timm's gMLP
# state dict (patch 4, 16 px, 10 classes, a custom size); {masks}: a valid segmentation
# folder (two 8 px images and their masks); {workdir}: where a run would go.
REAL = ["eval", "--init", "{npz}", "--evals", "real", "--set"]  # then the evaluator's keys
CASES: list[tuple[list[str], str]] = [
    (["pretrain", "--variant", "Q/16"], "Q/16"),
    (["pretrain", "--data", "no_such_dataset_xyz"], "no_such_dataset_xyz"),
    (["pretrain", "--data", "vtab:dsprites_locaton"], "did you mean vtab:dsprites_location?"),
    (
        ["finetune", "--init", "{npz}", "--data", "avg5:svhn"],
        "unknown avg5 task 'svhn': tasks: imagenet2012, cifar10, cifar100, oxford_iiit_pet",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "vtab19", "--workdir", "{workdir}"],
        "--suite 'vtab19': expected vtab1k or avg5, or tasks as PREFIX:NAME separated by "
        "commas (vtab: caltech101, cifar100, dtd",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "vtab:dtdd", "--workdir", "{workdir}"],
        "unknown vtab task 'dtdd': did you mean vtab:dtd?",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "avg5", "--steps-scale", "0"],
        "--steps-scale must be above 0, got 0",
    ),
    (["transfer", "--init", "{npz}", "--suite", "avg5", "--lr", "-0.1"], "--lr must be above 0"),
    (
        [
            "transfer",
            "--init",
            "{npz}",
            "--suite",
            "vtab:dmlab,avg5:cifar10",
            "--workdir",
            "{workdir}",
            "--data-dir",
            "{workdir}-tfds",
        ],
        "the suite needs 2 dataset(s) not prepared: vtab:dmlab: 'dmlab' is not prepared in",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "avg5:cifar10", "--resolution", "20"],
        "multiple",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "vtab:dtd", "--executor", "cluster"],
        "--executor 'cluster': expected inline (every run in this process), local (each run "
        "a job on this machine) or slurm",
    ),
    (
        ["transfer", "--init", "{npz}", "--suite", "vtab:dtd", "--partition", "gpu"],
        "--partition: job settings, for --executor local or slurm; --executor inline (the "
        "default) runs every run in this process",
    ),
    (
        [
            "transfer",
            "--init",
            "{npz}",
            "--suite",
            "vtab:dtd",
            "--executor",
            "local",
            "--gpus-per-job",
            "1",
        ],
        "--gpus-per-job: SLURM settings, for --executor slurm",
    ),
    (
        [
            "transfer",
            "--init",
            "{npz}",
            "--suite",
            "vtab:dtd",
            "--executor",
            "slurm",
            "--time-limit",
            "60",
        ],
        "--executor slurm: no `sbatch` on this machine's PATH; submit from a SLURM login node",
    ),
    (
        ["pretrain", "--data", "vtab:resisc45", "--data-dir", "{workdir}-tfds"],
        "NWPU-RESISC45.rar (https://1drv.ms/u/s!AmgKYzARBl5ca3HNaHIlzp_IXjs, the link in TFDS's "
        "resisc45 page) and extract it into {workdir}-tfds/downloads/manual/",
    ),
    (["pretrain", "--recipe", "no_such_recipe"], "no_such_recipe"),
    (["pretrain", "--set", "train.no_such_key=1"], "no_such_key"),
    (["pretrain", "--set", "train.steps=many"], "train.steps"),
    (["pretrain", "--set", "train.steps"], "train.steps"),
    (["pretrain", "--config", "{bad_yaml}"], "bad.yaml"),
    (["pretrain", "--config", "{workdir}/missing.yaml"], "missing.yaml"),
    (["pretrain", "--steps", "0"], "--steps"),
    (["pretrain", "--steps", "-5"], "--steps"),
    (["pretrain", "--batch-size", "0"], "--batch-size"),
    (["pretrain", "--batch-size", "12"], "8 devices"),
    (["pretrain", "--variant", "N/4", "--resolution", "30"], "resolution 30"),
    (["pretrain", "--dtype", "float16"], "float16"),
    (["pretrain", "--lr", "-1"], "optim.lr"),
    (["pretrain", "--data", "folder:{empty}"], "empty"),
    (["pretrain", "--data", "folder:{one_class}"], "class"),
    (["pretrain", "--data", "folder:{workdir}/nowhere"], "nowhere"),
    (["finetune", "--init", "{workdir}/missing.npz"], "missing.npz"),
    (["finetune", "--init", "{not_mixer}"], "not_mixer.npz"),
    (["finetune", "--init", "{n4}", "--resolution", "20"], "multiple"),
    (["finetune", "--init", "{npz}", "--set", "model.variant=B/16"], "model.variant"),
    (["finetune", "--init", "{npz}", "--lr-sweep", "fast,slow"], "fast"),
    (["finetune"], "--init"),
    (["fewshot", "--init", "{npz}", "--shots", "0"], "shots"),
    (["fewshot", "--init", "{npz}", "--shots", "1000"], "1000"),
    (["fewshot", "--init", "{npz}", "--seeds", "0"], "seeds"),
    (["fewshot", "--init", "{npz}", "--l2-reg", "-1"], "l2"),
    (["fewshot", "--init", "{workdir}/missing.npz"], "missing.npz"),
    (["pretrain", "--set", "evals.x.type=nonsense"], "unknown evaluator type 'nonsense'"),
    (["pretrain", "--set", "evals.test.shots=5"], "valid keys of a classification evaluator"),
    (["pretrain", "--set", "model.family=vgg"], "mixer, hybrid, resnet, vit"),
    (
        ["pretrain", "--set", "model.family=vit", "--variant", "Q/16"],
        "unknown ViT variant 'Q/16': expected SIZE/PATCH with SIZE one of N, Ti, S, B, L, H",
    ),
    (
        ["pretrain", "--set", "model.family=vit", "--variant", "N/4", "--resolution", "30"],
        "resolution 30 is not a positive multiple of ViT-N/4's patch size 4; try 28 or 32",
    ),
    (
        ["finetune", "--init", "{vit_npz}", "--resolution", "18"],
        "resolution 18 is not a positive multiple of ViT-2x16-32-2/4's patch size 4",
    ),
    (["finetune", "--init", "{vit_npz}", "--set", "model.classifier=gap"], "model.classifier"),
    (
        ["pretrain", "--init", "{vit_npz}", "--variant", "N/4", "--resolution", "16"],
        "vit.npz is a vit checkpoint and this run's model a mixer: set model.family=vit",
    ),
    (
        ["pretrain", "--set", "model.family=vit", "--variant", "N/2", "--init", "{npz}"],
        "is a mixer checkpoint and this run's model a vit: set model.family=mixer",
    ),
    (["plot", "weights", "--init", "{vit_npz}"], "is a vit: it mixes tokens without token-mixing"),
    (
        ["pretrain", "--set", "model.family=resmlp", "--variant", "Q/16"],
        "unknown ResMLP variant 'Q/16': expected SIZE/PATCH with SIZE one of S12, S24, S36, B24",
    ),
    (
        ["pretrain", "--set", "model.family=resmlp", "--variant", "2x16/4", "--resolution", "30"],
        "resolution 30 is not a positive multiple of ResMLP-2x16/4's patch size 4; try 28 or 32",
    ),
    (
        ["finetune", "--init", "{resmlp}", "--resolution", "24"],
        "resolution 24 is not an integer multiple of the checkpoint's 16; try 16 or 32",
    ),
    (
        ["pretrain", "--set", "model.family=gmlp", "--variant", "Q/16"],
        "unknown gMLP variant 'Q/16': expected SIZE/PATCH with SIZE one of Ti, S, B (listed: "
        "Ti/16, S/16, B/16",
    ),
    (
        ["pretrain", "--set", "model.family=gmlp", "--variant", "2x16-6/4", "--resolution", "30"],
        "resolution 30 is not a positive multiple of gMLP-2x16-6/4's patch size 4; try 28 or 32",
    ),
    (
        ["pretrain", "--set", "model.family=vit", "--set", "model.stem=conv"],
        "model.stem is an option of Mixers (families mixer, hybrid), not of model.family vit",
    ),
    (
        ["pretrain", "--set", "model.classifier=gap"],
        "model.classifier is an option of ViTs (family vit), not of model.family mixer",
    ),
    (["pretrain", "--set", "evals.test.split=nosuch"], "no split 'nosuch'"),
    (
        ["pretrain", "--set", "evals.f.type=fewshot", "--set", "evals.f.datasets=nosuch_xyz"],
        "nosuch_xyz",
    ),
    (
        [
            "pretrain",
            "--set",
            "evals.f.type=fewshot",
            "--set",
            "evals.f.datasets=imagenet21k",
            "--data-dir",
            "{empty}",
        ],
        "imagenet21k",
    ),
    (["pretrain", "--set", "evals.f.type=fewshot", "--set", "evals.f.shots=1000"], "1000"),
    (["pretrain", "--lr", "nan"], "optim.lr must be a finite number"),
    (["pretrain", "--data", "folder:{extra_class}"], "class 'owl' is in the evaluation split"),
    (["pretrain", "--set", "data.eval_split=nosuch"], "no split 'nosuch'"),
    (["pretrain", "--data", "folder:{damaged}"], "a truncated JPEG (no end marker)"),
    (["pretrain", "--set", "optim.lr=inf"], "optim.lr must be a finite number"),
    (
        ["pretrain", "--set", "data.augment_on=tpu"],
        "data.augment_on must be one of device, host, got 'tpu'",
    ),
    (
        ["pretrain", "--set", "data.randaug_magnitude=31"],
        "data.randaug_magnitude must be in [0, 30], got 31.0",
    ),
    (["pretrain", "--set", "data.randaug_layers=-1"], "data.randaug_layers must be in [0, 10]"),
    (["pretrain", "--set", "data.mixup=-0.5"], "data.mixup must be >= 0, got -0.5"),
    (["pretrain", "--set", "data.cutmix=nan"], "data.cutmix must be a finite number >= 0, got nan"),
    (
        ["pretrain", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "5"],
        "process id 5 is not one of the run's 2 processes",
    ),
    (["fewshot", "--init", "{npz}", "--l2-reg", "nan"], "--l2-reg needs distinct positive"),
    (["eval", "--init", "{workdir}/missing.npz"], "missing.npz"),
    (["eval", "--init", "{not_mixer}"], "not_mixer.npz"),
    (["eval", "--init", "{npz}", "--data", "digits", "--split", "nosuch"], "no split 'nosuch'"),
    (["eval", "--init", "{npz}", "--data", "no_such_dataset_xyz"], "no_such_dataset_xyz"),
    (["eval", "--init", "{npz}", "--resolution", "20"], "multiple"),
    (["eval", "--init", "{npz}", "--shots", "0"], "shots"),
    (["eval"], "--init"),
    (["predict", "{empty}", "--init", "{npz}"], "no images"),
    (["predict", "{workdir}/nothing.png", "--init", "{npz}"], "does not exist"),
    (["predict", "{one_class}", "--init", "{not_mixer}"], "not_mixer.npz"),
    (["permute", "--mode", "sideways"], "sideways"),
    (["permute", "--baseline", "vgg16"], "vgg16"),
    (["permute", "--mode", "patch", "--variant", "N/3"], "3"),
    (["bench", "--batch-size", "12"], "8 devices"),
    (["bench", "--dtype", "float16"], "float16"),
    (["bench", "--variant", "B/16", "--resolution", "100"], "resolution 100"),
    (["bench", "--mode", "inputs"], "unknown mode 'inputs': expected forward, train, both, lat"),
    (["bench", "--mode", "input"], "--mode input times a dataset's pipeline: give --data (fo"),
    (["bench", "--data", "digits"], "--data: only --mode input reads a dataset or recipe"),
    (["bench", "--recipe", "demo", "--mode", "train"], "--recipe: only --mode input reads a"),
    (
        ["bench", "--mode", "input", "--data", "folder:{damaged}", "--batch-size", "8"],
        "a truncated JPEG (no end marker)",
    ),
    (["bench", "--mode", "input", "--data", "folder:{extra_class}"], "8 examples, fewer than one"),
    (
        ["bench", "--mode", "input", "--data", "folder:{masks}", "--set", "model.head=segment"],
        "--mode input measures a classification pipeline; folder:",
    ),
    (
        ["bench", "--mode", "input", "--recipe", "demo", "--set", "data.randaug_magnitude=31"],
        "data.randaug_magnitude must be in [0, 30], got 31",
    ),
    (["finetune", "--init", "{truncated}"], "truncated.npz"),
    (["fewshot", "--init", "{flipped}"], "flipped.npz"),
    (["info", "--checkpoint", "{flipped}"], "flipped.npz"),
    (["finetune", "--init", "{vit}"], "key 'cls_token' does not fit"),
    (["eval", "--init", "hf-hub:timm/mixer_nowhere"], "not in the Hugging Face cache"),
    (["predict", "{one_class}", "--init", "hf-hub:mixer"], "expected hf-hub:ORG/NAME"),
    (["info", "--variant", "Q/16"], "Q/16"),
    (["info", "--variant", "B/16", "--data", "digits"], "at most one"),
    (["info", "--family", "hybrid"], "the hybrid family has no variant table"),
    (["pretrain", "--set", "model.pattern=MAXM"], "unknown block letter 'X'; letters: M"),
    (["pretrain", "--set", "model.pattern=MAM"], "has 3 letters but the model has 4 blocks"),
    (["pretrain", "--set", "model.conv_after=1,7"], "block 7 does not exist; blocks are 0 to 3"),
    (["pretrain", "--variant", "N/3", "--resolution", "9", "--set", "model.stem=conv"], "not 3"),
    (["bench", "--set", "model.token_mixing=max"], "model.token_mixing must be one of mlp, sum"),
    (["info", "--set", "model.heads=5", "--set", "model.pattern=" + "MA" * 6], "5 heads"),
    (["pretrain", "--set", "model.family=resnet", "--set", "model.stem=conv"], "of Mixers"),
    (
        ["info", "--variant=ResNet14", "--set=model.family=resnet", "--set=model.width=24"],
        "ResNet width 24 makes 48 channels",
    ),
    (
        ["pretrain", "--set", "model.token_mixing=sum", "--set", "model.init={npz}"],
        "do not fit",
    ),
    (["export", "--init", "{npz}", "--format", "coreml", "--out", "{workdir}/x"], "coreml"),
    (
        [
            "export",
            "--init",
            "{npz}",
            "--format",
            "stablehlo",
            "--int8",
            "dynamic",
            "--out",
            "{workdir}/x",
        ],
        "cannot carry int8",
    ),
    (["export", "--init", "{npz}", "--out", "{one_class}"], "pass --overwrite"),
    (
        [
            "export",
            "--init",
            "{npz}",
            "--format",
            "tflite",
            "--int8",
            "static",
            "--out",
            "{workdir}/x",
        ],
        "use --int8 dynamic",
    ),
    (["export", "--init", "{npz}", "--resolution", "20", "--out", "{workdir}/x"], "multiple"),
    (["export", "--init", "{not_mixer}", "--out", "{workdir}/x"], "not_mixer.npz"),
    (
        ["export", "--init", "{hybrid}", "--out", "{workdir}/x"],
        "families mixer, vit, resmlp, gmlp; ",
    ),
    (["export", "--init", "{npz}", "--float-token-mixing", "--out", "{workdir}/x"], "with --int8"),
    (
        [
            "export",
            "--init",
            "{vit_npz}",
            "--int8",
            "dynamic",
            "--float-token-mixing",
            "--out",
            "{workdir}/x",
        ],
        "is a vit, which has no token-mixing weights",
    ),
    (["bench", "--mode", "latency", "--exported", "{one_class}"], "not a mixer export"),
    (["convert", "{workdir}/missing.npz", "{workdir}/out.safetensors"], "missing.npz"),
    (["convert", "{npz}", "{workdir}/out.onnx"], "suffix must be one of .npz, .safetensors"),
    (["convert", "{not_mixer}", "{workdir}/out.npz"], "not_mixer.npz"),
    (["plot", "curves", "{empty}"], "has no metrics.jsonl"),
    (["plot", "weights", "--init", "{not_mixer}"], "not_mixer.npz"),
    (["plot", "weights", "--init", "{npz}", "--blocks", "5"], "block 5: the model has 2 blocks"),
    (["plot", "weights", "--init", "{npz}", "--blocks", "first"], "--blocks expects"),
    (["plot", "weights", "--init", "{npz}", "--out", "{workdir}/w.jpg"], ".png or .svg"),
    (["plot", "fewshot", "{one_class}"], "no results.json there"),
    (["plot", "fewshot", "{bad_yaml}"], "is not JSON"),
    (["segment", "--data", "folder:{mask_missing}"], "have no mask, first"),
    (["segment", "--data", "folder:{mask_values}"], "has label 2, outside the 2 classes"),
    (["segment", "--data", "folder:{mask_size}"], "is 8x6 but its image is 8x8"),
    (["segment", "--data", "folder:{one_class}"], "no <split>/images folders"),
    (["segment", "--data", "digits"], "digits has no masks"),
    (["segment", "--data", "cifar10"], "does not know where 'cifar10' keeps segmentation masks"),
    (["segment", "--variant", "N/4", "--resolution", "30"], "resolution 30"),
    (
        ["segment", "--set", "model.family=resnet", "--set", "model.variant=ResNet14"],
        "no token grid",
    ),
    (["segment", "--init", "{n4}", "--resolution", "24"], "multiple"),
    (
        ["segment", "--init", "{n4}", "--variant", "N/4"],
        "with --init the model is the checkpoint's",
    ),
    (["segment", "--set", "evals.test.type=classification"], "needs a classifier"),
    (["pretrain", "--data", "digit-scenes"], "digit-scenes is a segmentation set"),
    (["segment", "--data", "digits-placed"], "digits-placed has no masks"),
    (["no-such-command"], "no-such-command"),
    (["segment", "--data", "folder:{mask_16bit}"], "1.png': a 16-bit PNG (TensorFlow reads its 1"),
    (["segment", "--data", "folder:{mask_palette}"], "0.png': a palette PNG"),
    (["eval", "--init", "{npz}", "--data", "digits", "--split", "test[:0]"], "no images to eval"),
    (["pretrain", "--data", "cifar-10"], "not a TFDS name (NAME[/CONFIG][:VERSION]); did you mean"),
    (["pretrain", "--data", "cifar10:9.9.9"], "cannot be loaded at version 9.9.9, only: 3.0.2"),
    (["pretrain", "--data", "cifar10/nosuchconfig"], "cifar10 has no config 'nosuchconfig'"),
    (["pretrain", "--data", "cifar10:abc"], "'abc' is not a version (MAJOR.MINOR.PATCH"),
    (
        [
            "predict",
            "{unreadable}/a.webp",
            "{unreadable}/b.pdf",
            "{unreadable}/c.png",
            "{unreadable}/d.png",
            "--init",
            "{npz}",
        ],
        "none of the 4 file(s) is a readable image: '{unreadable}/a.webp' (not a JPEG, PNG, "
        "GIF or BMP image), '{unreadable}/b.pdf' (not a JPEG, PNG, GIF or BMP image), "
        "'{unreadable}/c.png' (cannot be decoded (Invalid PNG data",
    ),
    (
        ["eval", "--init", "{npz}", "--data", "folder:{damaged10}", "--split", "train"],
        "first '{damaged10}/train/c3/0.jpg': a truncated JPEG",
    ),
    (  # broken inside: met by the pipeline, then named by decoding the split's files
        ["eval", "--init", "{npz}", "--data", "folder:{inside10}"],
        "1 file(s) cannot be decoded: '{inside10}/test/c3/0.png' (cannot be decoded (Invalid PNG",
    ),
    (
        [
            "export",
            "--init",
            "{npz}",
            "--int8",
            "static",
            "--data",
            "folder:{damaged10}",
            "--out",
            "{workdir}/x",
        ],
        "first '{damaged10}/train/c3/0.jpg': a truncated JPEG",
    ),
    # files, weights, export and convert (issue 36)
    (["convert", "{npz}", "{n4}"], "n4.npz exists: choose another output or pass --overwrite"),
    (["convert", "{npz}", "{dir_npz}", "--overwrite"], "dir.npz is a directory"),
    (["info", "--checkpoint", "hf-hub:timm/a..b"], "is no Hugging Face repository name"),
    (["info", "--checkpoint", "hf-hub:../x"], "is no Hugging Face repository name"),
    (["bench", "--mode", "latency", "--exported", "{export_list}"], "expected a mapping, found a"),
    (["bench", "--mode", "latency", "--exported", "{export_foreign}"], "it has no 'model'"),
    (["plot", "fewshot", "{list_json}"], "list.json is not a `mixer fewshot` result: expected"),
    (["plot", "fewshot", "{fewshot_odd}"], "'datasets.digits.shots.5.mean' should be a number"),
    (["plot", "curves", "{run_odd}"], "results.json is not a mixer run's results: expected a"),
    (["plot", "curves", "{metrics_odd}"], "jsonl line 2 is not a metrics record: expected a"),
    (["eval", "--init", "{run_odd}"], "config.yaml is not a mixer run's config: 'model' should"),
    (["pretrain", "--config", "{list_yaml}"], "list.yaml is not a mixer config (sections model"),
    (["info", "--checkpoint", "{gelu_odd}"], "'gelu' should be one of exact, tanh, found a string"),
    (["info", "--checkpoint", "{mean_odd}"], "mean_odd.safetensors: 'mean' is not JSON"),
    (["info", "--checkpoint", "{hub_odd}"], "config.json is not a timm model config: expected a"),
    (["eval", "--init", "{hybrid}", "--resolution", "32"], "a hybrid checkpoint does not adapt"),
    # timm's ViTs that are not Google's ViT (issue 37)
    (["eval", "--init", "{vit_fc_norm}"], "is timm's fc_norm, a LayerNorm after the tokens' mean"),
    (["info", "--checkpoint", "{vit_no_embed_class}"], "class token's (timm's no_embed_class)"),
    # ReaL and the robustness sets (issue 38)
    (
        ["pretrain", "--set", "evals.v2.type=imagenet_v2", "--set", "evals.v2.config=nosuch"],
        "imagenet_v2 has no config 'nosuch' (configs: matched-frequency, threshold-0.7, topimages)",
    ),
    (  # TFDS leaves empty folders under the data directory (here ./tfds), no files
        ["eval", "--init", "{npz}", "--evals", "real", "--data-dir", "tfds"],
        "'imagenet2012_real' is not prepared in tfds/imagenet2012_real/1.0.0 and could not be",
    ),
    (["eval", "--init", "{npz}", "--evals", "real,nosuch"], "unknown evaluator type 'nosuch'"),
    (["eval", "--evals", "real", "--set", "optim.lr=1"], "--set optim.lr: only evaluator keys"),
    # ReaL from ILSVRC2012_val_K.JPEG files and real.json ({real_val}: 6 images, 3 classes)
    (
        [*REAL, "evals.real.data={real_val}", "--set", "evals.real.real_json={real_val}/r.json"],
        "real.json '{real_val}/r.json' does not exist; download it from https://github.com/",
    ),
    ([*REAL, "evals.real.real_json={real_json}"], "has real_json but no folder: set its data"),
    (
        [*REAL, "evals.real.data={real_val}", "--set", "evals.real.real_json={real_odd}"],
        "real_odd.json is not ReaL's real.json (a list of lists of class indices, one per "
        "image): item 2 is a str '2'",
    ),
    (
        [*REAL, "evals.real.data={real_val}", "--set", "evals.real.real_json={real_short}"],
        "has 6 validation images and {real_short} lists 5; ReaL needs the images real.json",
    ),
    (
        [*REAL, "evals.real.data={real_nameless}", "--set", "evals.real.real_json={real_json}"],
        "photo.jpg' has no validation index in its name; ReaL matches images to real.json",
    ),
    (
        [*REAL, "evals.real.data={real_val}", "--set", "evals.real.real_json={real_range}"],
        "gives image 2 (ILSVRC2012_val_00000002) class 3, outside 0..2 ('{real_val}' holds 3",
    ),
    (
        ["pretrain", "--set", "evals.s.type=classification", "--set", "evals.s.classes=3,99"],
        "classes must be at least two distinct class indices of digits (0..9); got class 99",
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, official_npz) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-input")
    (root / "empty" / "train").mkdir(parents=True)
    (root / "empty" / "test").mkdir(parents=True)
    write_image_folder(root / "one_class", {"train": 4, "test": 2}, classes=("cat",))
    write_image_folder(root / "extra_class", {"train": 4}, classes=("cat", "dog"))
    damaged = write_image_folder(root / "damaged", {"train": 4, "test": 2})
    (damaged / "train" / "cat" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    write_image_folder(root / "extra_class", {"test": 2}, classes=("cat", "dog", "owl"))
    (root / "bad.yaml").write_text("train: {steps: [1, 2\n")
    np.savez(root / "not_mixer.npz", weights=np.zeros((3, 3), np.float32))
    vit = {"cls_token": np.zeros((1, 1, 16), np.float32), "stem.proj.bias": np.zeros(16, "f4")}
    save_file(vit, str(root / "vit.safetensors"))
    resmlp = resmlp_state_dict(4, 2, 16, 16, 64, 10, seed=0)  # a timm ResMLP at 16 px
    save_file(resmlp, str(root / "resmlp.safetensors"))
    save_file(timm_gmlp_state(4, 2, 16, 6, 16, 10, seed=0), str(root / "gmlp.safetensors"))
    write_mask_folder(root / "masks", {"train": [(8, 8), (8, 8)]})
    write_mask_folder(root / "mask_missing", {"train": [(8, 8), (8, 8)]})
    (root / "mask_missing" / "train" / "masks" / "1.png").unlink()
    write_mask_folder(root / "mask_values", {"train": [(8, 8), (8, 8)]}, classes=3)
    (root / "mask_values" / "classes.txt").write_text("a\nb\n")
    write_mask_folder(root / "mask_size", {"train": [(8, 8), (8, 8)]})
    write_image(root / "mask_size" / "train" / "masks" / "1.png", np.zeros((8, 6, 1), np.uint8))
    for name, damaged_mask in (("mask_16bit", "1.png"), ("mask_palette", "0.png")):
        masks = write_mask_folder(root / name, {"train": [(8, 8), (8, 8)]}, classes=2)["train"]
        path, mask = root / name / "train" / "masks" / damaged_mask, masks[int(damaged_mask[0])]
        if name == "mask_16bit":  # Pillow reads its 0s and 1s; TensorFlow reads only 0s
            Image.fromarray(mask.astype(np.uint16)).save(path)
        else:  # Pillow reads its indices; TensorFlow its colours (3 channels)
            Image.fromarray(mask, mode="L").convert("P").save(path)
    ten = tuple(f"c{i}" for i in range(10))  # the classes of {npz}'s head
    write_image_folder(root / "damaged10", {"train": 1, "test": 1}, classes=ten)
    (root / "damaged10" / "train" / "c3" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    inside = write_image_folder(root / "inside10", {"train": 1, "test": 1}, classes=ten)
    broken = inside / "test" / "c3" / "0.png"  # header and end intact: only decoding fails
    write_image(broken, np.full((16, 16, 3), 9, np.uint8))
    (inside / "test" / "c3" / "0.jpg").unlink()
    damage_inside(broken)
    unreadable = root / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.webp").write_bytes(b"RIFF\x24\x00\x00\x00WEBPVP8 not really")
    (unreadable / "b.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    write_image(unreadable / "c.png", np.full((16, 16, 3), 9, np.uint8))
    damage_inside(unreadable / "c.png")
    (unreadable / "d.png").write_bytes(b"")
    vit = google_vit_params(patch=4, layers=2, width=16, mlp=32, heads=2, side=4, num_classes=10)
    np.savez(root / "vit.npz", **vit)
    model = create_model("N/4", num_classes=10)
    write_npz(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"], root / "n4.npz")
    hybrid = registry.build(ModelConfig("hybrid", "N/4", 16, token_mixing="sum"), 10)
    params = hybrid.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    write_npz(params, root / "hybrid.npz")
    odd = write_odd_files(root, official_npz[0])
    real = write_real_files(root)
    return {
        **odd,
        **real,
        "hybrid": str(root / "hybrid.npz"),
        "npz": official_npz[0],
        "n4": str(root / "n4.npz"),
        "empty": str(root / "empty"),
        "one_class": str(root / "one_class"),
        "extra_class": str(root / "extra_class"),
        "damaged": str(root / "damaged"),
        **{
            k: str(root / k)
            for k in (
                "masks",
                "mask_missing",
                "mask_values",
                "mask_size",
                "mask_16bit",
                "mask_palette",
            )
        },
        "damaged10": str(root / "damaged10"),
        "inside10": str(root / "inside10"),
        "unreadable": str(unreadable),
        "bad_yaml": str(root / "bad.yaml"),
        "not_mixer": str(root / "not_mixer.npz"),
        "vit": str(root / "vit.safetensors"),
        "resmlp": str(root / "resmlp.safetensors"),
        "gmlp": str(root / "gmlp.safetensors"),
        "vit_npz": str(root / "vit.npz"),
        "truncated": str(truncate(official_npz[0], root / "truncated.npz")),
        "flipped": str(flip_npz_array_bit(official_npz[0], root / "flipped.npz")),
    }


def write_odd_files(root: Path, npz: str) -> dict[str, str]:
    """Files that parse but are not what the command reading them expects."""
    (root / "list.json").write_text("[]")
    (root / "list.yaml").write_text("- model\n- data\n")
    for name, record in {"export_list": [], "export_foreign": {"file": "model.onnx"}}.items():
        (root / name).mkdir()
        (root / name / "model.onnx").write_bytes(b"")
        (root / name / "export.json").write_text(json.dumps(record))
    (root / "fewshot_odd.json").write_text(json.dumps({"command": "fewshot", "datasets": {
        "digits": {"shots": {"5": {"mean": "high", "std": 0.1}}}}}))  # fmt: skip
    (root / "dir.npz").mkdir()
    record = '{"step": 1, "train/loss": 2.3}'
    for run, results, lines in (("run_odd", "[]", [record]), ("metrics_odd", "{}", [record, "[]"])):
        (root / run).mkdir()
        shutil.copy(npz, root / run / "params.npz")
        (root / run / "config.yaml").write_text("model: [mixer]\n")
        (root / run / "results.json").write_text(results)
        (root / run / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    state = timm_state_dict(4, 2, 16, 16, 8, 32, 10, seed=3)
    save_file(state, str(root / "gelu_odd.safetensors"), metadata={"gelu": "fast"})
    save_file(state, str(root / "mean_odd.safetensors"), metadata={"mean": "half", "std": "1"})
    (root / "hub_odd").mkdir()
    save_file(state, str(root / "hub_odd" / "model.safetensors"), metadata={"format": "pt"})
    (root / "hub_odd" / "config.json").write_text("[]")
    vit = timm_vit_state_dict(4, 1, 64, 32, 2, 10, class_token=False)
    fc_norm = {"fc_norm.weight": np.ones(64, np.float32), "fc_norm.bias": np.zeros(64, "f4")}
    save_file({**vit, **fc_norm}, str(root / "vit_fc_norm.safetensors"))
    vit = timm_vit_state_dict(4, 1, 64, 32, 2, 10)
    vit["pos_embed"] = vit["pos_embed"][:, 1:]  # the grid's rows alone, the class token apart
    save_file(vit, str(root / "vit_no_embed_class.safetensors"))
    return {
        **{k: str(root / k) for k in ("export_list", "export_foreign", "run_odd", "metrics_odd")},
        **{
            k: str(root / f"{k}.safetensors")
            for k in ("gelu_odd", "mean_odd", "vit_fc_norm", "vit_no_embed_class")
        },
        "dir_npz": str(root / "dir.npz"),
        "list_json": str(root / "list.json"),
        "list_yaml": str(root / "list.yaml"),
        "fewshot_odd": str(root / "fewshot_odd.json"),
        "hub_odd": str(root / "hub_odd" / "model.safetensors"),
    }


def write_real_files(root: Path) -> dict[str, str]:
    """ImageNet validation images as files and real.json files that do not fit them."""
    red = (255, 0, 0)
    val = write_validation_images(root / "real_val", [red] * 6, ["a", "a", "c", "b", "b", "c"])
    nameless = write_validation_images(root / "real_nameless", [red] * 5)
    write_image(nameless / "photo.jpg", np.zeros((8, 8, 3), np.uint8))
    lists = {
        "real_json": [[0], [1], [], [2], [0, 1], []],
        "real_odd": [[0], [1], "2", [], [], []],
        "real_short": [[0], [1], [], [2], [0, 1]],
        "real_range": [[0], [1, 3], [], [], [], []],
    }
    for name, value in lists.items():
        (root / f"{name}.json").write_text(json.dumps(value))
    return {
        "real_val": str(val),
        "real_nameless": str(nameless),
        **{name: str(root / f"{name}.json") for name in lists},
    }


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert {argv[0] for argv, _ in CASES} >= {
        "pretrain",
        "finetune",
        "eval",
        "fewshot",
        "permute",
        "bench",
        "info",
        "segment",
    }


@pytest.mark.parametrize(("argv", "words"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_clear_line(
    capsys, monkeypatch, tmp_path, files, argv: list[str], words: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./runs here: a default --init finds nothing
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    earlier = tmp_path / "earlier-run"
    earlier.mkdir()
    (earlier / "params.npz").write_bytes(b"an earlier run's file")
    workdir = tmp_path / "work"
    values = {**files, "workdir": str(workdir)}
    argv = [a.format(**values) for a in argv]
    commands = ("pretrain", "finetune", "segment", "eval", "predict", "permute", "bench")
    if argv[0] in commands and "--workdir" not in argv:
        argv += ["--workdir", str(workdir)]
    before = snapshot(Path(files["npz"]).parent) | snapshot(tmp_path)

    code, out, err = run_cli(capsys, *argv)

    assert code == 2, (argv, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert words.format(**values) in err, err
    assert snapshot(Path(files["npz"]).parent) | snapshot(tmp_path) == before
    assert not workdir.exists() or not any(workdir.rglob("*"))


def test_a_cache_directory_that_is_a_file_is_refused_up_front(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MIXER_CACHE_DIR", str(blocker))
    code, _, err = run_cli(capsys, "pretrain", "--workdir", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{str(blocker)!r} is a file (set MIXER_CACHE_DIR to a directory)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("damaged", "words"),
    [
        ("train/owl", "class 'owl' has no readable training images in 'train' (its 2 damaged"),
        ("test", "split 'test' has no images to evaluate"),
    ],
)
def test_skipping_damaged_files_refuses_a_class_or_split_it_empties(
    capsys, tmp_path, damaged: str, words: str
) -> None:
    """data.skip_corrupt leaves damaged files out before the classes and the evaluation
    split are judged: what it empties is refused before step 1, after its warning."""
    root = write_image_folder(tmp_path / "imgs", {"train": 2, "test": 1})
    for path in (root / damaged).rglob("*.*"):
        truncate(path, path)
    workdir = tmp_path / "run"
    argv = ["pretrain", "--data", f"folder:{root}", "--set", "data.skip_corrupt=true"]
    code, _, err = run_cli(capsys, *argv, "--workdir", str(workdir))
    lines = err.splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("warning: left out") and str(root / damaged) in lines[0]
    assert lines[1].startswith("error: ") and words in lines[1], err
    assert not workdir.exists() or not any(workdir.rglob("*"))


def _no_room(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_no_room(request: object, path: Path) -> None:  # an export format's writer
    path.write_bytes(b"half of a model")
    _no_room()


@pytest.mark.parametrize("command", ["convert", "export"])
def test_a_full_disk_is_one_line_keeps_the_previous_output_and_the_rerun_completes(
    capsys, monkeypatch, tmp_path, official_npz, command
) -> None:
    """A write the disk refuses half-way (ENOSPC) over an earlier output: one line naming
    it, exit 2, the earlier output byte-identical and nothing left beside it; with room
    again the same command completes."""
    from dataclasses import replace

    from mixer_cli.export import formats

    out = tmp_path / ("out.npz" if command == "convert" else "export")
    argv = ["convert", official_npz[0], str(out)] if command == "convert" else [
        "export", "--init", official_npz[0], "--out", str(out)]  # fmt: skip
    if command == "convert":  # the earlier output
        shutil.copy(official_npz[0], out)
    else:
        out.mkdir()
        (out / "export.json").write_text("{}\n")
    before = snapshot(tmp_path)
    with monkeypatch.context() as patch:
        if command == "convert":
            patch.setattr(np, "savez", lambda file, **arrays: (file.write(b"PK"), _no_room()))
        else:
            onnx = replace(formats.REGISTRY["onnx"], write=_half_then_no_room)
            patch.setitem(formats.REGISTRY, "onnx", onnx)
        code, _, err = run_cli(capsys, *argv, "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"error: could not write {out}: No space left on device; the existing {out} is " in err
    assert snapshot(tmp_path) == before and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]

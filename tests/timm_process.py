"""timm itself, in its own process: the slow tests' reference for every family timm defines.

The interpreter is MIXER_TIMM_PYTHON (one with torch and timm; default: this one). Arrays
cross through files: `timm_run` makes a random timm model (the parameters timm starts at a
constant drawn at random, so they matter), saves its state dict as safetensors and its
logits on four random images; `timm_runs_ours` has timm load a file mixer wrote (strictly,
through its pretrained-file path) and returns its logits on the same images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.models.timm_state import save as save_timm

# argv: model name, {regex: [mean, std]} (the first match draws each parameter), weights, npz
_WRITE = textwrap.dedent(
    """
    import json, re, sys, numpy as np, timm, torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model(sys.argv[1], pretrained=False).eval()
    drawn = json.loads(sys.argv[2])
    with torch.no_grad():
        for name, p in model.named_parameters():
            found = next((d for pattern, d in drawn.items() if re.search(pattern, name)), None)
            if found is not None:
                p.normal_(*found)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[3])
    x01 = np.random.default_rng(0).uniform(0, 1, (4, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy((x01 - 0.5) / 0.5).permute(0, 3, 1, 2)).numpy()
    np.savez(sys.argv[4], images=x01, logits=logits)
    """
)
# argv: model name, a safetensors file mixer wrote, timm_run's npz, where the logits go
_READ = textwrap.dedent(
    """
    import sys, numpy as np, timm, torch
    model = timm.create_model(
        sys.argv[1], pretrained=True, pretrained_cfg_overlay=dict(file=sys.argv[2])
    ).eval()
    x01 = np.load(sys.argv[3])["images"]
    with torch.no_grad():
        logits = model(torch.from_numpy((x01 - 0.5) / 0.5).permute(0, 3, 1, 2)).numpy()
    np.save(sys.argv[4], logits)
    """
)


def _python() -> str:
    return os.environ.get("MIXER_TIMM_PYTHON", sys.executable)


def timm_run(
    tmp_path: Path, name: str, drawn: dict[str, tuple[float, float]]
) -> tuple[Path, np.ndarray, np.ndarray]:
    """timm's model `name`, the parameters matching `drawn`'s patterns drawn N(mean, std):
    (its safetensors file, the images x01 in [0, 1] [4, 224, 224, 3], timm's logits)."""
    weights, outputs = tmp_path / "model.safetensors", tmp_path / "timm.npz"
    script = [_python(), "-c", _WRITE, name, json.dumps(drawn), weights, outputs]
    subprocess.run(script, check=True)
    with np.load(outputs) as run:
        return weights, run["images"], run["logits"]


def timm_runs_ours(
    tmp_path: Path, name: str, family: str, params: Any, *, gelu: str = "exact"
) -> np.ndarray:
    """`params` of `family` written in timm's layout by mixer, loaded by timm as `name`:
    its logits on `timm_run`'s images (call that first, with the same tmp_path)."""
    ours = save_timm(family, params, tmp_path / "ours.safetensors", gelu=gelu)
    back = tmp_path / "back.npy"
    subprocess.run([_python(), "-c", _READ, name, ours, tmp_path / "timm.npz", back], check=True)
    return np.load(back)

"""The Mixer variant table: one place for every architecture's numbers.

A variant is a size (depth and widths) plus a patch size, written ``SIZE/PATCH``
as in the paper (``B/16``). Any size goes with any patch size. The paper's sizes
are S, B, L and H (Table 1); N (nano) and Ti (tiny) are ours, for CPU work. All
sizes keep the paper's ratios D_C = 4C and D_S = C/2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mixer_cli.core.errors import ConfigError, nearby_multiples


@dataclass(frozen=True)
class MixerSize:
    """Depth and widths of a Mixer, independent of its patch size."""

    num_blocks: int
    hidden_dim: int  # C: channels per token
    tokens_mlp_dim: int  # D_S: hidden width of the token-mixing MLP
    channels_mlp_dim: int  # D_C: hidden width of the channel-mixing MLP


SIZES: dict[str, MixerSize] = {
    "N": MixerSize(num_blocks=4, hidden_dim=128, tokens_mlp_dim=64, channels_mlp_dim=512),
    "Ti": MixerSize(num_blocks=8, hidden_dim=256, tokens_mlp_dim=128, channels_mlp_dim=1024),
    "S": MixerSize(num_blocks=8, hidden_dim=512, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "B": MixerSize(num_blocks=12, hidden_dim=768, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "L": MixerSize(num_blocks=24, hidden_dim=1024, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "H": MixerSize(num_blocks=32, hidden_dim=1280, tokens_mlp_dim=640, channels_mlp_dim=5120),
}

# Table 1 of the paper, in its order.
PAPER_VARIANTS: tuple[str, ...] = ("S/32", "S/16", "B/32", "B/16", "L/32", "L/16", "H/14")
# What `mixer info` lists: our CPU sizes first, then the paper's.
LISTED_VARIANTS: tuple[str, ...] = ("N/16", "Ti/16", *PAPER_VARIANTS)

_VARIANT_RE = re.compile(r"^(?:mixer[-_])?([A-Za-z]+)[/_](\d+)$", re.IGNORECASE)
# An architecture outside the table, as checkpoints define them: BLOCKSxC-D_S-D_C/PATCH.
_CUSTOM_RE = re.compile(r"^(\d+)x(\d+)-(\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True)
class MixerSpec:
    """A complete architecture: a size and a patch size (the head is not part of it)."""

    name: str
    patch_size: int
    num_blocks: int
    hidden_dim: int
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @property
    def size(self) -> MixerSize:
        return MixerSize(
            self.num_blocks, self.hidden_dim, self.tokens_mlp_dim, self.channels_mlp_dim
        )

    def seq_len(self, resolution: int) -> int:
        """Number of tokens S for square images of this resolution."""
        return (resolution // self.patch_size) ** 2

    def check_resolution(self, resolution: int) -> None:
        """Refuse resolutions the patch grid cannot tile, suggesting the nearest valid ones."""
        check_patch_grid(resolution, self.patch_size, self.name)


def parse_variant(variant: str) -> MixerSpec:
    """``'B/16'`` (also ``b_16``, ``Mixer-B_16``), or a custom architecture written
    ``BLOCKSxC-D_S-D_C/PATCH`` (``'2x16-8-32/4'``) -> its MixerSpec."""
    custom = _CUSTOM_RE.match(variant.strip())
    if custom and all(int(n) > 0 for n in custom.groups()):
        blocks, hidden, tokens, channels, patch = (int(n) for n in custom.groups())
        return spec_from_dims(patch, blocks, hidden, tokens, channels)
    match = _VARIANT_RE.match(variant.strip())
    sizes = {name.lower(): name for name in SIZES}
    if not match or match.group(1).lower() not in sizes or int(match.group(2)) <= 0:
        raise ConfigError(
            f"unknown variant {variant!r}: expected SIZE/PATCH with SIZE one of "
            f"{', '.join(SIZES)} and PATCH a positive integer (e.g. B/16), or "
            "BLOCKSxC-D_S-D_C/PATCH for another architecture (e.g. 2x16-8-32/4)"
        )
    size_name, patch = sizes[match.group(1).lower()], int(match.group(2))
    size = SIZES[size_name]
    return MixerSpec(
        name=f"{size_name}/{patch}",
        patch_size=patch,
        num_blocks=size.num_blocks,
        hidden_dim=size.hidden_dim,
        tokens_mlp_dim=size.tokens_mlp_dim,
        channels_mlp_dim=size.channels_mlp_dim,
    )


def spec_from_dims(
    patch_size: int, num_blocks: int, hidden_dim: int, tokens_mlp_dim: int, channels_mlp_dim: int
) -> MixerSpec:
    """A spec from raw dimensions (e.g. read off a checkpoint), named after its size if known."""
    size = MixerSize(num_blocks, hidden_dim, tokens_mlp_dim, channels_mlp_dim)
    size_name = next((name for name, known in SIZES.items() if known == size), None)
    name = (
        f"{size_name}/{patch_size}"
        if size_name
        else f"{num_blocks}x{hidden_dim}-{tokens_mlp_dim}-{channels_mlp_dim}/{patch_size}"
    )
    return MixerSpec(name, patch_size, num_blocks, hidden_dim, tokens_mlp_dim, channels_mlp_dim)


def check_patch_grid(resolution: int, patch: int, model: str) -> None:
    """Refuse resolutions `model`'s patch grid cannot tile, suggesting the nearest valid ones."""
    if resolution <= 0 or resolution % patch:
        raise ConfigError(
            f"resolution {resolution} is not a positive multiple of {model}'s patch size "
            f"{patch}; try {nearby_multiples(resolution, patch)}"
        )

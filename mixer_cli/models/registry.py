"""Model families as plug-ins: name -> how to parse a variant, build, count, load, warm-start.

A family is one module exposing `FAMILY` (a `Family`), listed in `FAMILY_MODULES`; the
module is imported only when the family is used. Nothing outside a family's module
branches on its name: the engine, `mixer eval` and the shuffle experiment ask the
registry. Adding a family is its module plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models.settings import FAMILY_MODULES, FAMILY_NAMES, HEADS, ModelConfig
from mixer_cli.models.timm_state import TimmLayout


@dataclass
class Loaded:
    """A checkpoint ready to run: its module, parameters and what its arrays say."""

    model: Any
    params: dict[str, Any]
    family: str
    name: str  # the variant, as the family writes it
    resolution: int
    num_classes: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. grid_factor (for results)
    config: dict[str, Any] = field(default_factory=dict)  # model.* keys that rebuild it


@dataclass(frozen=True)
class Family:
    """What the rest of mixer may ask of a model family."""

    name: str
    # The variant's display name; refuses a bad variant or resolution (ConfigError).
    parse: Callable[[ModelConfig], str]
    # (model config, classes, head bias init) -> a Flax module returning (logits, out).
    build: Callable[[ModelConfig, int, float], Any]
    # The patch size the shuffle experiment permutes by default (0: the family has none).
    patch_size: Callable[[ModelConfig], int]
    # Flat '/'-joined arrays of a checkpoint -> whether they are this family's.
    matches: Callable[[Mapping[str, Any]], bool]
    # (flat arrays, name for messages, requested resolution or None, the model settings
    # the checkpoint carries: `weights.forms.saved_settings`) -> Loaded.
    load: Callable[[Mapping[str, Any], str, int | None, Mapping[str, Any]], Loaded]
    # (checkpoint path, freshly initialised params, 'all' | 'backbone') -> params to train.
    warm_start: Callable[[str, dict[str, Any], str], dict[str, Any]]
    # (model config, classes) -> {'params': int, 'gflops': float} per image.
    count: Callable[[ModelConfig, int], dict[str, Any]]
    # (checkpoint, another resolution) -> the model.* settings of fine-tuning it there,
    # refusing a resolution the family cannot take; None: it runs at its own only.
    resolution_settings: Callable[[Loaded, int], dict[str, Any]] | None = None
    # The variants `mixer info --family NAME` lists (none: the family has no table).
    variants: tuple[str, ...] = ()
    # Flat arrays -> {block: its token-mixing weights [S, units]}, each unit a weight per
    # input token: what `mixer plot weights` draws (the paper's Fig. 5); None: no such
    # weights (tokens mixed by attention or convolution).
    token_weights: Callable[[Mapping[str, Any]], dict[int, Any]] | None = None
    # (variant, paper dataset 'imagenet' | 'imagenet21k' | None) -> (the recipe its paper
    # trains it with there, or None; its paper's resolution, or None): what `mixer pretrain
    # --variant V [--data D]` means without --recipe. Refuses a variant (ConfigError).
    paper_setting: Callable[[str, str | None], tuple[str | None, int | None]] | None = None
    # Its parameters as timm's state dicts name them (None: timm has no such design).
    timm: TimmLayout | None = None
    # Other families whose checkpoints it warm-starts from (a hybrid from a Mixer's).
    starts_from: tuple[str, ...] = ()
    # (loaded, *, batch_size: int | None (None: any batch), uint8_input: bool) -> the
    # onnx.ModelProto of its logits (models/NAME_onnx.py, helpers in core/onnx_ops.py):
    # what `mixer export --format onnx` writes; None: ONNX export is refused.
    onnx: Callable[..., Any] | None = None
    # The family as prose names it, in tables and figures ('ViT', 'gMLP'); "": its name.
    title: str = ""

    def label(self, variant: str) -> str:
        """'Mixer N/4', 'ViT N/4'; a variant that names its family already ('ResNet14')
        as it is."""
        title = self.title or self.name
        return variant if variant.lower().startswith(self.name) else f"{title} {variant}"

    @property
    def adapts_resolution(self) -> bool:
        """A checkpoint fine-tunes (and evaluates) at another resolution than its own."""
        return self.resolution_settings is not None


def onnx_of(graph: Callable[..., Any]) -> Callable[[Loaded], Any]:
    """`Family.onnx` from a family's graph writer, `graph(flat, resolution, *, gelu,
    batch_size, uint8_input)` (models/NAME_onnx.py): a loaded model's graph, in the GELU
    form it was trained with."""

    def graph_of(loaded: Loaded, *, batch_size: int | None, uint8_input: bool) -> Any:
        from mixer_cli.weights.arrays import flat_params

        return graph(
            flat_params(loaded.params),
            loaded.resolution,
            gelu=loaded.details.get("gelu", "tanh"),
            batch_size=batch_size,
            uint8_input=uint8_input,
        )

    return graph_of


def get(name: str) -> Family:
    """The family called `name`, refusing unknown ones with the valid names."""
    if name not in FAMILY_MODULES:
        raise ConfigError(f"unknown model family {name!r}; families: {', '.join(FAMILY_NAMES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY


def families_that(capability: str) -> list[str]:
    """The names of the families with a capability (`onnx`, `timm`, ...)."""
    return [name for name in FAMILY_NAMES if getattr(get(name), capability)]


def family_of(flat: Mapping[str, Any], source: str) -> Family:
    """The family whose parameter layout a checkpoint's arrays have."""
    for name in FAMILY_NAMES:
        family = get(name)
        if family.matches(flat):
            return family
    raise CheckpointMismatch(
        f"{source} is not a checkpoint of a known model family ({', '.join(FAMILY_NAMES)})"
    )


def build(m: ModelConfig, num_classes: int, head_bias: float = 0.0) -> Any:
    """The model a run trains: the family's network under the config's head."""
    if m.head == HEADS[1]:
        from mixer_cli.models.segment_head import build_segmenter

        return build_segmenter(get(m.family), m, num_classes)
    return get(m.family).build(m, num_classes, head_bias)


def check_warm_start(m: ModelConfig) -> None:
    """Refuse a warm start the config cannot take (before anything is written): a
    checkpoint of another family, or a whole classifier under a segmentation head."""
    if m.init is None:
        return
    if m.head == HEADS[1] and m.init_scope != "backbone":
        raise ConfigError(
            "model.init_scope must be backbone for a segmentation head: the checkpoint gives "
            "the backbone (and a segmentation model's head where its classes match)"
        )
    from mixer_cli.models.checkpoints import read_params

    flat, source = read_params(m.init)
    found = family_of(flat, source).name
    if found != m.family and found not in get(m.family).starts_from:
        raise CheckpointMismatch(
            f"{source} is a {found} checkpoint and this run's model a {m.family}: set "
            f"model.family={found} (and its variant), or start from a {m.family} checkpoint"
        )


def warm_start(m: ModelConfig, fresh: dict[str, Any]) -> dict[str, Any]:
    """`fresh` (initialised) parameters with what `model.init` gives them."""
    family = get(m.family)
    if m.head == HEADS[1]:
        from mixer_cli.models.segment_head import warm_start as segmenter_warm_start

        return segmenter_warm_start(family, m.init, fresh)
    return family.warm_start(m.init, fresh, m.init_scope)


def settings_at_resolution(loaded: Loaded, resolution: int | None) -> dict[str, Any]:
    """The model.* settings of fine-tuning a checkpoint at `resolution` (default: its own),
    as its family's rule says (the Mixer: an integer multiple, the paper's Appendix C; the
    ViT: position embeddings interpolated)."""
    if resolution is None or resolution == loaded.resolution:
        return {}
    family = get(loaded.family)
    if family.resolution_settings is None:
        raise fixed_resolution(loaded.family, resolution, loaded.resolution)
    return family.resolution_settings(loaded, resolution)


def fixed_resolution(family: str, resolution: int, native: int) -> ConfigError:
    """The refusal of --resolution for a checkpoint of a family that does not
    `adapts_resolution`."""
    adapting = ", ".join(families_that("adapts_resolution"))
    return ConfigError(
        f"--resolution {resolution}: a {family} checkpoint does not adapt to another "
        f"resolution (families that do: {adapting}); this one runs at "
        f"{native} px: leave --resolution out or give {native}"
    )


def load_checkpoint(path: Any, resolution: int | None = None) -> Loaded:
    """Any checkpoint `--init` takes (Google's npz or name, ours, a run directory, timm's
    safetensors or hf-hub name) as a ready model. A run directory's config.yaml names its
    family and resolution; a bare file is recognised by its arrays."""
    from mixer_cli.models.checkpoints import read_params
    from mixer_cli.weights.forms import saved_settings

    flat, source = read_params(path)
    settings = saved_settings(path)
    if "family" in settings or "kind" in settings:  # a run's config.yaml
        family = get(settings.get("family", settings.get("kind", "mixer")))
        resolution = resolution or settings.get("resolution")
    else:
        family = family_of(flat, source)
    return family.load(flat, source, resolution, settings)

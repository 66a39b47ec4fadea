"""Run configuration: frozen dataclasses <- a YAML recipe or file <- command-line flags.

Every default lives here, once. A recipe is a YAML file with the sections `model`,
`data`, `optim` and `train`; flags override single keys (`optim.lr=3e-3`). Unknown
keys and values of the wrong type are refused with the valid choices named, so a
typo never silently does nothing. The resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixer_cli.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "mixer"  # mixer, or resnet (the shuffle experiment's baseline)
    variant: str = "N/2"  # a Mixer SIZE/PATCH, or ResNet{depth}x{factor} for kind resnet
    resolution: int = 8
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate at the last block, growing linearly from 0
    dtype: str = "float32"  # compute dtype; parameters stay float32
    grid_factor: int = 1  # K: token mixing K^2 wider, for K x the pre-training resolution
    width: int = 64  # ResNet only: base channels (BiT x1 = 64)


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None
    train_split: str | None = None  # None: the dataset's own ('train')
    eval_split: str | None = None  # None: 'test', else 'validation'
    crop: str = "inception"  # training crop: inception or resize
    crop_min_area: float = 0.05
    flip: bool = True  # ignored for datasets where mirroring changes meaning (digits)
    randaug_layers: int = 0
    randaug_magnitude: float = 0.0
    mixup: float = 0.0
    permutation: str = "none"  # the shuffle experiment: none, patch or global (train and test)
    permutation_patch: int = 0  # patch mode's patch size; 0 = the Mixer's
    permutation_seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # adam (decoupled weight decay) or sgd (momentum)
    lr: float = 1e-3
    end_lr: float = 1e-5  # where the decay ends
    schedule: str = "linear"  # after warmup: linear or cosine decay
    warmup_steps: int = 10_000
    weight_decay: float = 0.1  # decoupled, multiplied by the lr (0.1 x 1e-3 = 1e-4/step)
    b1: float = 0.9
    b2: float = 0.999
    momentum: float = 0.9
    clip_norm: float = 1.0  # global gradient norm; 0 = off


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 0  # total steps; 0 = from epochs
    epochs: float = 0.0
    batch_size: int = 4096
    eval_batch_size: int = 0  # 0 = batch_size
    accum_steps: int = 1  # micro-batches per step (gradient accumulation)
    # Steps run as one program between the host's log/eval/checkpoint points (same result)
    steps_per_execution: int = 10
    loss: str = "softmax"  # softmax or sigmoid cross-entropy (sigmoid: head bias -6.9)
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0  # 0 = at the end only
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


CHOICES = {
    "model.kind": ("mixer", "resnet"),
    "data.permutation": ("none", "patch", "global"),
    "optim.optimizer": ("adam", "sgd"),
    "optim.schedule": ("linear", "cosine"),
    "train.loss": ("softmax", "sigmoid"),
    "data.crop": ("inception", "resize"),
    "model.dtype": ("float32", "bfloat16"),
}
POSITIVE = (
    "model.resolution",
    "model.grid_factor",
    "model.width",
    "train.batch_size",
    "train.accum_steps",
    "train.steps_per_execution",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "optim.lr",
)
NON_NEGATIVE = (
    "train.steps",
    "train.epochs",
    "train.eval_every",
    "train.eval_batch_size",
    "optim.warmup_steps",
    "optim.weight_decay",
    "optim.end_lr",
    "optim.clip_norm",
    "data.randaug_layers",
    "data.randaug_magnitude",
    "data.mixup",
    "data.permutation_patch",
)


def recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _parse(text: str, target: type) -> Any:
    """A command-line (or YAML 1.1 '3e-3') string as the field's type; ValueError if not."""
    if target is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(text)
    return target(text)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check a value against its field type, parsing strings (from flags or YAML)."""
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if type(None) in allowed and (value is None or str(value).lower() in ("none", "null")):
        return None
    for target in (t for t in allowed if t is not type(None)):
        if isinstance(value, bool) != (target is bool) and not isinstance(value, str):
            continue
        if isinstance(value, target):
            return value
        if target is float and isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return _parse(value, target)
            except ValueError:
                continue
    names = " or ".join(t.__name__ for t in allowed)
    raise ConfigError(f"{key} must be {names}, got {value!r}")


LENGTH_KEYS = ("train.steps", "train.epochs")
# How a run executes, never what it computes: a resume may change these.
EXECUTION_KEYS = ("train.steps_per_execution",)


def _with_updates(config: Config, updates: dict[str, Any], origin: str) -> Config:
    """Apply one layer of settings. A layer that sets one of train.steps and train.epochs
    clears the other: the run's length is whichever the latest layer chose."""
    given = [key for key in LENGTH_KEYS if key in updates]
    if len(given) == 1:
        other = LENGTH_KEYS[1 - LENGTH_KEYS.index(given[0])]
        updates = {other: 0 if other == "train.steps" else 0.0, **updates}
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if section not in sections:
            raise ConfigError(
                f"unknown config key {key!r} in {origin}: sections are {', '.join(sections)}"
            )
        fields = {f.name: f for f in dataclasses.fields(sections[section])}
        if name not in fields:
            raise ConfigError(
                f"unknown config key {key!r} in {origin}; valid {section} keys: {', '.join(fields)}"
            )
        hints = typing.get_type_hints(type(sections[section]))
        coerced = _coerce(key, value, hints[name])
        sections[section] = dataclasses.replace(sections[section], **{name: coerced})
    return Config(**sections)


def _flatten(tree: Any, origin: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin} must map sections (model, data, optim, train) to keys")
    flat = {}
    for section, values in tree.items():
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} in {origin} must be a mapping of keys")
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return _flatten(yaml.safe_load(path.read_text()) or {}, str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML in {path}: {' '.join(str(err).split())}") from None


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(recipes())}")
    return path


def resolve(
    recipe: str | None,
    config_file: Path | None,
    overrides: dict[str, Any],
    base: list[tuple[str, dict[str, Any]]] = (),
) -> Config:
    """defaults < base layers (origin, settings) < recipe or YAML file < overrides (dotted
    keys), validated."""
    if recipe is not None and config_file is not None:
        raise ConfigError("give --recipe or --config, not both")
    config = Config()
    for origin, settings in base:
        config = _with_updates(config, settings, origin)
    if recipe is not None or config_file is not None:
        path = recipe_path(recipe) if recipe is not None else config_file
        config = _with_updates(config, read_yaml(path), str(path))
    config = _with_updates(config, overrides, "the command line")
    validate(config)
    return config


def validate(config: Config) -> None:
    flat = {f"{s}.{k}": v for s, values in config.to_dict().items() for k, v in values.items()}
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {flat[key]!r}")
    for key in POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be > 0, got {flat[key]}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    if (config.train.steps > 0) == (config.train.epochs > 0):
        raise ConfigError("set exactly one of train.steps and train.epochs (both > 0 or both 0)")


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """['optim.lr=3e-3', ...] -> {'optim.lr': '3e-3'} (values are parsed against the field)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=3e-3), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_number_list(text: str, kind: type, what: str) -> list:
    """'0.003,0.01' -> [0.003, 0.01] (or ints); refuses non-numbers, values <= 0, repeats."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} expects comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{what} needs distinct positive numbers, got {text!r}")
    return values

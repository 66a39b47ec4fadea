"""Run configuration: frozen dataclasses <- a YAML recipe or file <- command-line flags.

Every default lives here, once. A recipe is a YAML file with the sections `model`,
`data`, `optim`, `train` and `evals`; flags override single keys (`optim.lr=3e-3`,
`evals.fewshot.shots=1,5`). `evals` maps evaluator names to their type and settings
(each type's keys and defaults are its module's `Settings`, see `mixer_cli.evals`);
`--set evals.NAME=none` removes one. Unknown keys, types and values of the wrong type
are refused with the valid choices named, so a typo never silently does nothing. The
resolved config is saved with every run, and is all the run is.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixer_cli.core import files
from mixer_cli.core.errors import ConfigError
from mixer_cli.models.settings import (
    FAMILY_NAMES,
    MODEL_CHOICES,
    MODEL_NON_NEGATIVE,
    MODEL_POSITIVE,
    ModelConfig,
    implied_family,
)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


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
    mixup: float = 0.0  # Beta(p, p) blend of each example with its neighbour; 0 = off
    cutmix: float = 0.0  # Beta(a, a) area of a neighbour's box pasted in; with mixup: either, 50/50
    permutation: str = "none"  # the shuffle experiment: none, patch or global (train and test)
    permutation_patch: int = 0  # patch mode's patch size; 0 = the Mixer's
    permutation_seed: int = 0
    # Where flip, RandAugment, mixup and CutMix run: device (in the jitted train step; the
    # host only decodes, crops and resizes) or host (tf.data: older runs, bit for bit)
    augment_on: str = "device"
    skip_corrupt: bool = False  # image folders: leave damaged files out (else refuse them)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # adam (decoupled weight decay), lamb (its layer-wise form) or sgd
    lr: float = 1e-3
    end_lr: float = 1e-5  # where the decay ends
    schedule: str = "linear"  # after warmup: linear or cosine decay
    warmup_steps: int = 10_000
    weight_decay: float = 0.1  # decoupled, multiplied by the lr (0.1 x 1e-3 = 1e-4/step)
    b1: float = 0.9
    b2: float = 0.999
    momentum: float = 0.9
    clip_norm: float = 1.0  # global gradient norm; 0 = off
    sam_rho: float = 0.0  # > 0: SAM, the gradient taken rho * g / |g| uphill (2x the cost)


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
    label_smoothing: float = 0.0  # training targets (1 - a) y + a / K; evaluation unchanged
    ema_decay: float = 0.0  # > 0: a moving average of the weights, evaluated and saved too
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0  # 0 = at the end only
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3


def default_evals() -> dict[str, Any]:
    """Every run's evaluation unless its recipe says otherwise: `test`, classification on
    the run's evaluation split."""
    from mixer_cli.evals import settings_class

    return {"test": settings_class("classification")()}


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evals: dict[str, Any] = field(default_factory=default_evals)  # name -> its Settings

    def to_dict(self) -> dict[str, dict[str, Any]]:
        from dataclasses import asdict

        from mixer_cli.evals.base import settings_dict

        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out: dict[str, dict[str, Any]] = {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(value).items()}
            for name, value in sections.items()
            if name != "evals"
        }
        out["evals"] = {name: settings_dict(value) for name, value in self.evals.items()}
        return out


CHOICES = {
    "data.permutation": ("none", "patch", "global"),
    "optim.optimizer": ("adam", "lamb", "sgd"),
    "optim.schedule": ("linear", "cosine"),
    "train.loss": ("softmax", "sigmoid"),
    "data.crop": ("inception", "resize"),
    "data.augment_on": ("device", "host"),
    **MODEL_CHOICES,
}
POSITIVE = (
    *MODEL_POSITIVE,
    "train.batch_size",
    "train.accum_steps",
    "train.steps_per_execution",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "optim.lr",
)
NON_NEGATIVE = (
    *MODEL_NON_NEGATIVE,
    "train.steps",
    "train.epochs",
    "train.eval_every",
    "train.eval_batch_size",
    "optim.warmup_steps",
    "optim.weight_decay",
    "optim.end_lr",
    "optim.clip_norm",
    "data.mixup",
    "data.cutmix",
    "train.label_smoothing",
    "train.ema_decay",
    "optim.sam_rho",
    "data.permutation_patch",
)

# Closed ranges [low, high]. RandAugment: each layer is a 16-way choice compiled into the
# step; past magnitude 30 the geometric ops leave any sensible range (rotations past 90
# degrees, translations past 300 px) and the others saturate.
BOUNDED = {"data.randaug_layers": (0, 10), "data.randaug_magnitude": (0, 30)}


def _valid_range(key: str) -> str:
    """' > 0', ' >= 0', ' in [a, b]' or '': what validate() allows for `key`."""
    if key in BOUNDED:
        return " in [{}, {}]".format(*BOUNDED[key])
    return " > 0" if key in POSITIVE else " >= 0" if key in NON_NEGATIVE else ""


# The paper's pre-training datasets -> the part of the recipe names that stands for them.
PAPER_DATASETS = {"imagenet2012": "imagenet", "imagenet21k": "imagenet21k"}


def implied_settings(
    variant: str | None, data: str | None, assignments: list[str] = ()
) -> tuple[str | None, dict, str]:
    """What `mixer pretrain --variant V [--data D]` means without a recipe, as the model's
    family says (`--set model.family`, default mixer): a paper size is its paper's
    resolution, and on a paper dataset that paper's recipe (the Mixer's: B's for S and B,
    L's for L and H). Returns (recipe or None, settings, a note for the user)."""
    from mixer_cli.models import registry

    family = parse_assignments(list(assignments)).get("model.family", ModelConfig.family)
    if variant is None or family not in FAMILY_NAMES:  # an unknown family: refused later
        return None, {}, ""
    paper_setting = registry.get(family).paper_setting
    dataset = PAPER_DATASETS.get((data or "").split(":")[0].strip())
    try:
        recipe, resolution = paper_setting(variant, dataset) if paper_setting else (None, None)
    except ConfigError:  # a variant the family refuses: the run's config says so
        return None, {}, ""
    if recipe is not None:
        note = f"recipe {recipe} (the paper's for {variant} on {data}; --recipe picks another)"
        return recipe, {}, note
    if resolution is None:
        return None, {}, ""
    note = f"{variant} at the paper's {resolution} px (--resolution picks another)"
    return None, {"model.resolution": resolution}, note


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
    if typing.get_origin(kind) is tuple:  # tuple[X, ...]: a YAML list or 'a,b,c'
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        element = typing.get_args(kind)[0]
        return tuple(
            _coerce(key, item.strip() if isinstance(item, str) else item, element)
            for item in items
            if not (isinstance(item, str) and not item.strip())
        )
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
# How a run executes, how often it looks or saves, never what it trains: a resume may
# change these (`evals.NAME.every` too).
CHANGEABLE_KEYS = (
    "train.steps_per_execution",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
)
REMOVE = ("none", "null", "~")  # `--set evals.NAME=none` removes an evaluator


def changeable(key: str) -> bool:
    """Whether a resume may change this dotted key (see CHANGEABLE_KEYS)."""
    return key in CHANGEABLE_KEYS or (key.startswith("evals.") and key.endswith(".every"))


def _with_updates(config: Config, updates: dict[str, Any], origin: str) -> Config:
    """Apply one layer of settings. A layer that sets one of train.steps and train.epochs
    clears the other: the run's length is whichever the latest layer chose."""
    given = [key for key in LENGTH_KEYS if key in updates]
    if len(given) == 1:
        other = LENGTH_KEYS[1 - LENGTH_KEYS.index(given[0])]
        updates = {other: 0 if other == "train.steps" else 0.0, **updates}
    sections: dict[str, Any] = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    evals = dict(config.evals)
    # An evaluator's type first: its other keys are checked against that type's settings.
    for key, value in sorted(updates.items(), key=lambda kv: not kv[0].endswith(".type")):
        section, _, name = key.partition(".")
        if section == "evals":
            _update_eval(evals, name, value, origin)
            continue
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
    return Config(**{**sections, "evals": evals})


def _update_eval(evals: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """One `evals.NAME[.KEY]` setting: a new evaluator needs its type first."""
    from mixer_cli.evals import TYPES, settings_class

    name, _, field_name = key.partition(".")
    if not name or "/" in name or "." in field_name:
        raise ConfigError(
            f"evaluator keys are evals.NAME.KEY (NAME without '/'), got 'evals.{key}' in {origin}"
        )
    if not field_name:
        if value is None or str(value).lower() in REMOVE:
            evals.pop(name, None)
            return
        raise ConfigError(
            f"'evals.{name}' in {origin} must map keys (type: {', '.join(TYPES)}, ...) "
            "or be none to remove it"
        )
    if field_name == "type":
        current = evals.get(name)
        if current is None or current.type != value:
            evals[name] = settings_class(str(value))()
        return
    if name not in evals:
        raise ConfigError(
            f"evaluator {name!r} in {origin} has no type: set evals.{name}.type to one of "
            f"{', '.join(TYPES)}"
        )
    settings = evals[name]
    fields = [f.name for f in dataclasses.fields(settings)]
    if field_name not in fields:
        raise ConfigError(
            f"unknown config key 'evals.{key}' in {origin}; valid keys of a {settings.type} "
            f"evaluator: {', '.join(fields)}"
        )
    hint = typing.get_type_hints(type(settings))[field_name]
    coerced = _coerce(f"evals.{key}", value, hint)
    evals[name] = dataclasses.replace(settings, **{field_name: coerced})


def _flatten(tree: Any, origin: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin} must map sections (model, data, optim, train, evals) to keys")
    flat = {}
    for section, values in tree.items():
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} in {origin} must be a mapping of keys")
        if section == "evals":  # evals: {NAME: {type: ..., KEY: ...} or none}
            for name, settings in values.items():
                if isinstance(settings, dict):
                    flat.update({f"evals.{name}.{k}": v for k, v in settings.items()})
                else:
                    flat[f"evals.{name}"] = settings
            continue
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe or --config file as flat `section.key` settings (validated later)."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    what = "a mixer config (sections model, data, optim, train, evals of keys)"
    return _flatten(files.read_yaml(path, what), str(path))


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
    config = with_implied_family(config)
    validate(config)
    return config


def with_implied_family(config: Config) -> Config:
    """The config with the model family its options imply (`models.settings`)."""
    return dataclasses.replace(config, model=implied_family(config.model))


def validate(config: Config, section: str | None = None) -> None:
    """Refuse values no run can use (all sections, or only `section`'s keys)."""
    tree = config.to_dict()
    if section is not None:
        tree = {section: tree[section]}
    flat = {f"{s}.{k}": v for s, values in tree.items() for k, v in values.items()}
    for key, value in _numbers(tree):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number{_valid_range(key)}, got {value}")
    for key, allowed in CHOICES.items():
        if key in flat and flat[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {flat[key]!r}")
    for key in POSITIVE:
        if key in flat and flat[key] <= 0:
            raise ConfigError(f"{key} must be > 0, got {flat[key]}")
    for key in NON_NEGATIVE:
        if key in flat and flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    for key, (low, high) in BOUNDED.items():
        if key in flat and not low <= flat[key] <= high:
            raise ConfigError(f"{key} must be in [{low}, {high}], got {flat[key]}")
    for key in ("train.label_smoothing", "train.ema_decay"):
        if key in flat and flat[key] >= 1:
            raise ConfigError(f"{key} must be < 1, got {flat[key]}")
    if section is not None:
        return
    if (config.train.steps > 0) == (config.train.epochs > 0):
        raise ConfigError("set exactly one of train.steps and train.epochs (both > 0 or both 0)")
    if config.model.init_scope == "backbone" and config.model.init is None:
        raise ConfigError("model.init_scope is backbone but model.init names no checkpoint")
    for name, settings in config.evals.items():
        for key in ("every", "batch_size"):
            if getattr(settings, key) < 0:
                raise ConfigError(f"evals.{name}.{key} must be >= 0, got {getattr(settings, key)}")


def _numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float in a config's dict form (lists too), with its dotted key."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _numbers(value, prefix)
    elif isinstance(tree, float):
        yield prefix.rstrip("."), tree


def upgrade(saved: dict[str, Any], current: Config) -> dict[str, Any]:
    """A config.yaml of an older mixer in today's form: `model.kind` is `model.family`;
    a run from before `evals` existed evaluated what today's config declares, one from
    before `data.augment_on` augmented on the host."""
    saved = {section: dict(values or {}) for section, values in saved.items()}
    model = saved.setdefault("model", {})
    if "kind" in model:
        model["family"] = model.pop("kind")
    defaults = Config().to_dict()["model"]
    for key, value in current.to_dict()["model"].items():
        if key in ("init", "init_scope"):
            model.setdefault(key, value)
        else:  # a key added since (gelu, stem, ...): the run had its default
            model.setdefault(key, defaults[key])
    saved.setdefault("evals", current.to_dict()["evals"])
    saved.setdefault("data", {}).setdefault("augment_on", "host")
    return saved


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


def model_config(variant: str, resolution: int, dtype: str, items: list[str]) -> ModelConfig:
    """A model config from a variant and `--set model.KEY=VALUE` items (what `mixer bench`
    and `mixer info` build), validated like a run's, the family implied by its options."""
    assignments = parse_assignments(items)
    other = next((key for key in assignments if not key.startswith("model.")), None)
    if other is not None:
        raise ConfigError(f"--set {other}: only model.* keys apply here")
    base = {"model.variant": variant, "model.resolution": resolution, "model.dtype": dtype}
    config = with_implied_family(_with_updates(Config(), {**base, **assignments}, "--set"))
    validate(config, "model")
    return config.model


def named_evals(kinds: tuple[str, ...], items: list[str]) -> dict[str, Any]:
    """What `mixer eval --evals TYPES --set evals.NAME.KEY=VALUE` runs: one evaluator per
    type, named as its type, with its defaults, then the items applied and checked as a
    config's `evals:` are (`--set evals.real.real_json=real.json`)."""
    assignments = parse_assignments(items)
    other = next((key for key in assignments if not key.startswith("evals.")), None)
    if other is not None:
        raise ConfigError(f"--set {other}: only evaluator keys (evals.NAME.KEY) apply here")
    updates = {**{f"evals.{kind}.type": kind for kind in kinds}, **assignments}
    return _with_updates(Config(evals={}), updates, "--set").evals


def parse_number_list(text: str, kind: type, what: str) -> list:
    """'0.003,0.01' -> [0.003, 0.01] (or ints); refuses non-numbers, values <= 0, nan and
    inf, repeats."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} expects comma-separated numbers, got {text!r}") from None
    if (
        not values
        or any(not math.isfinite(v) or v <= 0 for v in values)
        or len(set(values)) != len(values)
    ):
        raise ConfigError(f"{what} needs distinct positive numbers, got {text!r}")
    return values

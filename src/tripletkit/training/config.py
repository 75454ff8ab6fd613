"""Training configuration: typed sections, loaded from YAML/TOML and flags, validated with names.

A configuration is a :class:`RunConfig` of sections (``data``, ``model``, ``loss``, ``optim``,
``train``). Files (YAML, TOML or JSON) and ``--set section.key=value`` style overrides are merged in that
order (later wins); every key is checked against the dataclass fields, so a typo is an error that
names the key and suggests the closest valid one, and a value of the wrong type names the key and the
type it needs. The resolved configuration is written to the run directory as ``config.json``.

>>> config = resolve_config(overrides={"loss.margin": "0.3", "train.epochs": 2})
>>> config.loss.margin, config.train.epochs
(0.3, 2)
>>> resolve_config(overrides={"loss.margn": 0.3})
Traceback (most recent call last):
...
ValueError: unknown config key 'loss.margn'; did you mean 'loss.margin'?
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tripletkit.training.precision import PRECISIONS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "config_keys",
    "load_config_file",
    "resolve_config",
]


@dataclass
class DataConfig:
    """What to train and validate on.

    ``dataset``: ``"auto"`` (with a ``path``: what the path holds, a folder of images, a manifest
    or features; without: Fashion-MNIST when its Debian package is installed, else scikit-learn
    digits), ``"fashion-mnist"``, ``"digits"``, ``"image-folder"``, ``"manifest"`` or ``"vectors"``.
    ``train_classes``: the classes trained on; the others are held out for class-disjoint
    validation (None: the dataset's standard split). ``p`` × ``k``: classes × items per batch.
    """

    dataset: str = "auto"
    path: str | None = None
    val_path: str | None = None
    # Labels of ``.npy`` features (a ``.npy`` of N labels); Parquet features carry a label column.
    labels_path: str | None = None
    val_labels_path: str | None = None
    train_classes: list[int] | None = None
    p: int = 5
    k: int = 32
    augment: bool = True
    image_size: int | None = None
    num_workers: int = 0
    batches_per_epoch: int | None = None
    val_limit: int | None = None
    allow_outside_root: bool = False
    strict: bool = False


@dataclass
class ModelConfig:
    """The embedding model, built by name from the registry (``tripletkit.models``).

    ``name`` None picks by data: ``small_cnn`` for images, ``mlp`` for vectors, ``text_encoder``
    for text.

    ``embedding_dim`` and ``pretrained`` left as None take the model's own defaults (pretrained
    weights where the model ships them), so a pretrained backbone is never silently random.

    ``projector``: widths of a training-only MLP that the loss trains through while the
    embedding (evaluation, index) stays the layer before it, e.g. ``[512, 512, 128]``; see
    :mod:`tripletkit.models.embedding`. ``projector_frozen``: keep the projector at its random
    initial weights (the loss trains the model through a fixed random projection).
    """

    name: str | None = None
    embedding_dim: int | None = None
    pretrained: bool | None = None
    normalize: bool = True
    projector: list[int] | None = None
    projector_frozen: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """The loss, by name (``tripletkit.losses.list_losses()``; ``"triplet"`` is
    :class:`~tripletkit.losses.BatchTripletLoss`).

    ``margin``, ``mining``, ``distance`` and ``soft`` left as None take the default recipe for the
    triplet loss (see ``tripletkit.training.build.DEFAULT_TRIPLET_RECIPE``) and the loss's own
    defaults for the others. Any other constructor argument goes in ``options``.
    """

    name: str = "triplet"
    margin: float | None = None
    mining: str | None = None
    distance: str | None = None
    soft: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    min_lr_fraction: float = 0.0
    grad_clip: float | None = 5.0
    loss_lr_multiplier: float = 100.0


@dataclass
class TrainConfig:
    """The loop: epochs, precision, accumulation, checkpoints, early stopping, seed."""

    epochs: int = 5
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    grad_accumulation: int = 1
    eval_every_epochs: int = 1
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "map_at_r"
    checkpoint_every_steps: int = 50
    run_dir: str | None = None
    # A run directory that already holds a run is refused unless this is set (the old run's
    # files are then removed first) or the run is resumed.
    overwrite: bool = False
    quiet: bool = False
    tensorboard: bool = True
    report: bool = True
    # glibc's malloc keeps freed blocks for the next step (tripletkit.training.allocator).
    keep_freed_memory: bool = True


@dataclass
class RunConfig:
    """Everything a training run needs; see each section's class for its keys."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (the run directory's ``config.json``)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


_CHOICES: dict[str, tuple[str, ...]] = {
    "train.precision": PRECISIONS,
    "optim.schedule": ("cosine", "constant"),
}


def config_keys() -> list[str]:
    """Every valid dotted key, e.g. ``"loss.margin"``."""
    return [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(RunConfig)
        for f in dataclasses.fields(section.default_factory())
    ]


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(candidates)}"


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (possibly a string from the command line) to the field's type."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(key, value, option)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    expected = origin or hint
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "1",
            "on",
            "false",
            "no",
            "0",
            "off",
        ):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(f"config key {key!r} must be true or false; got {value!r}")
    if expected is int:
        if isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be an integer; got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"config key {key!r} must be an integer; got {value!r}") from None
        if not number.is_integer():
            raise ValueError(f"config key {key!r} must be an integer; got {value!r}")
        return int(number)
    if expected is float:
        if isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be a number; got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"config key {key!r} must be a number; got {value!r}") from None
    if expected is str:
        if not isinstance(value, str):
            raise ValueError(f"config key {key!r} must be a string; got {value!r}")
        return value
    if expected is list:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r} must be a list; got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [v if item is Any else _coerce(key, v, item) for v in value]
    if expected is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(
                    f"config key {key!r} must be a mapping (JSON on the command line); got {value!r}"
                ) from None
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r} must be a mapping; got {value!r}")
        return dict(value)
    return value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and "." not in dotted:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``, e.g. a run
    directory's ``config.json``) file into flat dotted keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
        if suffix == ".toml":
            tree = tomllib.loads(text)
        elif suffix == ".json":
            tree = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            tree = yaml.safe_load(text) or {}
        else:
            raise ValueError(
                f"config file {str(path)!r}: unknown format {suffix!r}; use .yaml, .yml, .toml "
                "or .json"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, ImportError) as err:
        raise ValueError(f"config file {str(path)!r} could not be read: {err}") from err
    except Exception as err:
        if err.__class__.__module__.startswith("yaml"):
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from err
        raise
    if not isinstance(tree, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of sections")
    return _flatten(tree)


def resolve_config(
    files: list[str | Path] | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults, then each file, then ``overrides`` (dotted keys), validated.

    Raises:
        ValueError: an unknown key (with the closest valid key), a value of the wrong type, or a
            value outside its choices.
    """
    config = RunConfig()
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}  # the file each key's value came from (flags: none)
    for path in files or []:
        loaded = load_config_file(path)
        merged.update(loaded)
        source.update(dict.fromkeys(loaded, str(path)))
    for key in overrides or {}:
        source.pop(key, None)
    merged.update(overrides or {})
    valid = config_keys()
    sections = {key.split(".", 1)[0] for key in valid}
    for key, value in merged.items():
        try:
            if key in sections:
                raise ValueError(
                    f"config section {key!r} must be a mapping of its keys (e.g. [{key}] in "
                    f"TOML); got {value!r}"
                )
            if key not in valid:
                raise ValueError(f"unknown config key {key!r}{_suggest(key, valid)}")
            section_name, field_name = key.split(".", 1)
            section = getattr(config, section_name)
            hints = typing.get_type_hints(type(section))
            coerced = _coerce(key, value, hints[field_name])
            if key in _CHOICES and coerced not in _CHOICES[key]:
                listed = ", ".join(repr(c) for c in _CHOICES[key])
                raise ValueError(f"config key {key!r} must be one of {listed}; got {coerced!r}")
        except ValueError as err:
            if key in source:
                raise ValueError(f"config file {source[key]!r}: {err}") from None
            raise
        setattr(section, field_name, coerced)
    try:
        _check_ranges(config)
    except ConfigKeyError as err:
        if err.key in source:  # the file that set the key is named too
            raise ValueError(f"config file {source[err.key]!r}: {err}") from None
        raise
    return config


class ConfigKeyError(ValueError):
    """A configuration key's value out of range: ``key`` names it, and the message starts with
    ``config key 'KEY'``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}{message}")
        self.key = key


def _check_ranges(config: RunConfig) -> None:
    positive = {
        "data.p": config.data.p,
        "data.k": config.data.k,
        "train.epochs": config.train.epochs,
        "train.grad_accumulation": config.train.grad_accumulation,
        "train.eval_every_epochs": config.train.eval_every_epochs,
        "train.checkpoint_every_steps": config.train.checkpoint_every_steps,
        "optim.lr": config.optim.lr,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigKeyError(key, f" must be > 0; got {value!r}")
    if config.model.projector is not None:
        from tripletkit.models.embedding import check_projector

        try:
            check_projector(config.model.projector)
        except ValueError as err:
            raise ConfigKeyError("model.projector", f": {err}") from None
    elif config.model.projector_frozen:
        raise ConfigKeyError(
            "model.projector_frozen",
            " is true but there is no projector; set "
            "model.projector (e.g. [128]) or leave model.projector_frozen false",
        )
    if config.model.embedding_dim is not None and config.model.embedding_dim < 1:
        raise ConfigKeyError(
            "model.embedding_dim", f" must be > 0; got {config.model.embedding_dim}"
        )
    if config.data.k < 2:
        raise ConfigKeyError(
            "data.k",
            f" must be >= 2 (K items per class make the positive pairs); got {config.data.k}",
        )
    if config.data.p < 2:
        raise ConfigKeyError(
            "data.p", f" must be >= 2 (negatives come from other classes); got {config.data.p}"
        )
    if not 0 <= config.optim.warmup_fraction < 1:
        raise ConfigKeyError(
            "optim.warmup_fraction", f" must be in [0, 1); got {config.optim.warmup_fraction}"
        )
    if config.loss.margin is not None and config.loss.margin < 0:
        raise ConfigKeyError("loss.margin", f" must be >= 0; got {config.loss.margin}")

"""Build any embedding model by name: ``create_model("resnet18", embedding_dim=128)``.

One registry, as in timm, so that the CLI, configuration files, checkpoints and tests name models
the same way. A *builder* is a function decorated with :func:`register_model` that returns a
backbone: an ``nn.Module`` mapping a batch of inputs to ``(B, feature_dim)`` features, with the
attributes ``feature_dim: int`` and ``input_spec`` (see :mod:`tripletkit.models.input_spec`).
:func:`create_model` puts a projection head and L2 normalisation on top
(:class:`~tripletkit.models.embedding.EmbeddingModel`) and records a JSON-able ``config`` from
which the same architecture is rebuilt: ``create_model(**model.config)``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from tripletkit.models.embedding import (
    HEADS,
    EmbeddingModel,
    check_projector,
    check_projector_frozen,
)
from tripletkit.validation import check_choice

__all__ = [
    "ModelEntry",
    "create_model",
    "create_model_from_config",
    "get_model_entry",
    "list_models",
    "register_model",
    "unregister_model",
]

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

# The arguments create_model itself consumes; builders may not reuse these names.
_RESERVED = (
    "name",
    "pretrained",
    "embedding_dim",
    "normalize",
    "head",
    "projector",
    "projector_frozen",
)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        name: the registry name.
        builder: returns the backbone (an ``nn.Module`` with ``feature_dim`` and ``input_spec``).
        embedding_dim: default output dimension of the projection head; ``None`` means no
            projection by default (the backbone's features are the embedding).
        head: default head, one of :data:`~tripletkit.models.embedding.HEADS`.
        has_pretrained: whether bundled pretrained weights exist (the builder then takes a
            ``pretrained`` argument).
        pretrained_default: what ``pretrained=None`` means for this model.
        description: the first line of the builder's docstring.
    """

    name: str
    builder: Callable[..., nn.Module]
    embedding_dim: int | None
    head: str
    has_pretrained: bool
    pretrained_default: bool
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the builder's own keyword arguments (besides ``pretrained``)."""
        return tuple(p for p in inspect.signature(self.builder).parameters if p != "pretrained")


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    builder: Builder | None = None,
    *,
    name: str | None = None,
    embedding_dim: int | None = 128,
    head: str = "linear",
    pretrained: bool | None = None,
) -> Any:
    """Register a backbone builder under ``name`` (default: the function's name).

    Use bare (``@register_model``) or with options (``@register_model(embedding_dim=64)``).

    Args:
        builder: a function of keyword arguments returning an ``nn.Module`` with attributes
            ``feature_dim`` and ``input_spec`` whose forward maps a batch to ``(B, feature_dim)``.
            Its arguments must have JSON-able defaults (they end up in ``model.config``).
        name: registry name.
        embedding_dim: default output dimension of the projection head (``None``: no head).
        head: default head: ``"linear"``, ``"mlp"`` or ``"identity"``.
        pretrained: ``None`` if the model has no bundled weights; otherwise the default of
            ``create_model(..., pretrained=None)``, and the builder must take ``pretrained``.

    Returns:
        The builder, unchanged (or a decorator when called with options only).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tripletkit.models import VectorInputSpec, create_model, register_model
        >>> class Linear(nn.Module):
        ...     def __init__(self, in_features: int) -> None:
        ...         super().__init__()
        ...         self.layer = nn.Linear(in_features, 16)
        ...         self.feature_dim = 16
        ...         self.input_spec = VectorInputSpec(in_features)
        ...     def forward(self, x):
        ...         return self.layer(x)
        >>> @register_model(name="doc_linear", embedding_dim=8)
        ... def doc_linear(in_features: int = 4) -> nn.Module:
        ...     '''A single linear layer.'''
        ...     return Linear(in_features)
        >>> create_model("doc_linear")(torch.randn(2, 4)).shape
        torch.Size([2, 8])
        >>> unregister_model("doc_linear")
    """

    def decorate(fn: Builder) -> Builder:
        entry_name = name or fn.__name__
        if entry_name in _REGISTRY and _REGISTRY[entry_name].builder is not fn:
            raise ValueError(f"a model named {entry_name!r} is already registered")
        check_choice(head, HEADS, "head")
        parameters = inspect.signature(fn).parameters
        reused = [p for p in parameters if p in _RESERVED and p != "pretrained"]
        if reused:
            raise ValueError(
                f"builder {fn.__name__!r} takes {', '.join(reused)}, which create_model consumes "
                f"itself; rename them (reserved: {', '.join(_RESERVED)})"
            )
        if pretrained is not None and "pretrained" not in parameters:
            raise ValueError(
                f"builder {fn.__name__!r} is registered with pretrained weights but takes no "
                "'pretrained' argument"
            )
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[entry_name] = ModelEntry(
            name=entry_name,
            builder=fn,
            embedding_dim=embedding_dim,
            head=head,
            has_pretrained=pretrained is not None,
            pretrained_default=bool(pretrained),
            description=doc.splitlines()[0] if doc else "",
        )
        return fn

    if builder is not None:
        return decorate(builder)
    return decorate


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (for plugins and tests); ``ValueError`` if unknown."""
    get_model_entry(name)
    del _REGISTRY[name]


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted names of the registered models.

    Args:
        pattern: a shell-style wildcard (``"resnet*"``) to filter names.
        pretrained: only models with bundled pretrained weights.

    >>> list_models("resnet*")
    ['resnet18', 'resnet34']
    """
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        names = [n for n in names if _REGISTRY[n].has_pretrained]
    return names


def get_model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` registered as ``name``; ``ValueError`` (with a suggestion) if none.

    >>> get_model_entry("small_cnn").embedding_dim
    64
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string; got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    accepted = ", ".join(sorted(_REGISTRY))
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}; accepted: {accepted}{hint}")


def create_model(
    name: str,
    pretrained: bool | None = None,
    embedding_dim: int | None = None,
    normalize: bool = True,
    head: str | None = None,
    projector: list[int] | None = None,
    projector_frozen: bool = False,
    **kwargs: Any,
) -> EmbeddingModel:
    """Build a registered model: backbone → projection head → optional L2 normalisation.

    Args:
        name: a name from :func:`list_models`.
        pretrained: load the bundled pretrained weights. ``None`` means the model's default
            (True for models that bundle weights, which are then the point of using them).
            ``True`` for a model without weights raises ``ValueError``.
        embedding_dim: output dimension D. ``None`` means the model's default.
        normalize: L2-normalise the output rows (on by default; triplet margins assume it).
        head: ``"linear"`` (one linear layer), ``"mlp"`` (linear-ReLU-linear) or ``"identity"``
            (the backbone's features, then ``embedding_dim`` must be ``None`` or equal to them).
            ``None`` means the model's default, or ``"linear"`` when ``embedding_dim`` is given
            for a model whose default is ``"identity"``.
        projector: widths of a training-only MLP projector that the loss trains through
            (``[512, 128]``: ReLU-linear to 512, ReLU-linear to 128); the embedding stays the
            layer before it. ``None``: no projector. See :mod:`tripletkit.models.embedding`.
        projector_frozen: keep the projector at its random initial weights: the loss trains
            the model through a fixed random projection (needs ``projector``).
        **kwargs: the builder's own options (e.g. ``in_channels``); see
            ``get_model_entry(name).options``.

    Returns:
        An :class:`~tripletkit.models.embedding.EmbeddingModel` mapping a batch to ``(B, D)``;
        ``model.config`` rebuilds it with ``create_model(**model.config)``.

    Example:
        >>> import torch
        >>> from tripletkit.models import create_model
        >>> model = create_model("small_cnn")
        >>> model(torch.randn(4, 1, 28, 28)).shape
        torch.Size([4, 64])
        >>> create_model(**model.config).config == model.config
        True
    """
    config = {
        "name": name,
        "pretrained": pretrained,
        "embedding_dim": embedding_dim,
        "normalize": normalize,
        "head": head,
        **kwargs,
    }
    if projector is not None:
        config["projector"] = projector
    if projector_frozen is not False:
        config["projector_frozen"] = projector_frozen
    return create_model_from_config(config)


def create_model_from_config(
    config: Mapping[str, Any], load_pretrained_weights: bool = True
) -> EmbeddingModel:
    """Build a model from a config dict (``model.config``), as :func:`create_model` does.

    Args:
        config: ``{"name": ..., "pretrained": ..., "embedding_dim": ..., "normalize": ...,
            "head": ..., "projector": ..., "projector_frozen": ..., **builder options}``;
            missing keys take their defaults.
        load_pretrained_weights: ``False`` builds the architecture without reading the bundled
            weights even if ``config["pretrained"]`` is true (used by ``load_model``, which
            overwrites every weight anyway); the returned config still says ``pretrained``.

    >>> create_model_from_config({"name": "mlp", "in_features": 8}).embedding_dim
    64
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    if "name" not in config:
        raise ValueError("config has no 'name'; expected e.g. {'name': 'resnet18', ...}")
    options = dict(config)
    entry = get_model_entry(options.pop("name"))
    pretrained = _resolve_pretrained(entry, options.pop("pretrained", None))
    normalize = options.pop("normalize", True)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False; got {normalize!r}")
    embedding_dim = options.pop("embedding_dim", None)
    if embedding_dim is not None and (
        isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1
    ):
        raise ValueError(f"embedding_dim must be a positive integer or None; got {embedding_dim!r}")
    head = options.pop("head", None)
    if head is None:
        head = "linear" if embedding_dim is not None and entry.head == "identity" else entry.head
    check_choice(head, HEADS, "head")
    projector = options.pop("projector", None)
    if projector is not None:
        projector = check_projector(projector)
    projector_frozen = options.pop("projector_frozen", False)
    check_projector_frozen(projector_frozen, projector)  # before the backbone's (slow) build
    if head != "identity" and embedding_dim is None:
        embedding_dim = entry.embedding_dim
        if embedding_dim is None:
            raise ValueError(
                f"model {entry.name!r} has no default embedding_dim; give one for head={head!r}"
            )

    builder_options = _bind_options(entry, options)
    call_options = dict(builder_options)
    if entry.has_pretrained:
        call_options["pretrained"] = pretrained and load_pretrained_weights
    backbone = entry.builder(**call_options)
    _check_backbone(entry, backbone)
    if head == "identity" and embedding_dim not in (None, backbone.feature_dim):
        raise ValueError(
            f"head='identity' outputs the backbone's {backbone.feature_dim} features, but "
            f"embedding_dim={embedding_dim}; use head='linear' to project to {embedding_dim}"
        )

    resolved = {
        "name": entry.name,
        "pretrained": pretrained,
        "embedding_dim": backbone.feature_dim if head == "identity" else embedding_dim,
        "normalize": normalize,
        "head": head,
        **({"projector": projector} if projector is not None else {}),
        **({"projector_frozen": projector_frozen} if projector_frozen is not False else {}),
        **builder_options,
    }
    return EmbeddingModel(
        backbone,
        embedding_dim=resolved["embedding_dim"],
        head=head,
        normalize=normalize,
        projector=projector,
        config=resolved,
        projector_frozen=projector_frozen,
    )


def _resolve_pretrained(entry: ModelEntry, pretrained: Any) -> bool:
    if pretrained is None:
        return entry.pretrained_default
    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be True, False or None; got {pretrained!r}")
    if pretrained and not entry.has_pretrained:
        with_weights = ", ".join(list_models(pretrained=True)) or "none"
        raise ValueError(
            f"model {entry.name!r} has no bundled pretrained weights; pass pretrained=False "
            f"(models with weights: {with_weights})"
        )
    return pretrained


def _bind_options(entry: ModelEntry, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``options`` against the builder's signature; return them with defaults, JSON-able."""
    accepted = entry.options
    unknown = [k for k in options if k not in accepted]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        listed = ", ".join(accepted) or "none"
        raise ValueError(
            f"model {entry.name!r} got unknown option(s) {', '.join(hints)}; accepted: {listed}"
        )
    parameters = inspect.signature(entry.builder).parameters
    missing = [
        p for p in accepted if parameters[p].default is inspect.Parameter.empty and p not in options
    ]
    if missing:
        raise ValueError(f"model {entry.name!r} needs option(s) {', '.join(missing)}")
    bound = {}
    for key in accepted:
        value = options[key] if key in options else parameters[key].default
        bound[key] = _to_json_value(value, f"{entry.name} option {key!r}")
    return bound


def _to_json_value(value: Any, what: str) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v, what) for v in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{what} is {value!r}, which cannot be stored in a JSON config; pass numbers, "
            "strings, booleans, lists or None"
        ) from err
    return value


def _check_backbone(entry: ModelEntry, backbone: Any) -> None:
    if not isinstance(backbone, nn.Module):
        raise TypeError(
            f"builder of {entry.name!r} returned {type(backbone).__name__}; expected an nn.Module"
        )
    feature_dim = getattr(backbone, "feature_dim", None)
    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
        raise TypeError(
            f"backbone of {entry.name!r} has feature_dim={feature_dim!r}; builders must return a "
            "module with a positive int attribute feature_dim"
        )
    if not hasattr(backbone, "input_spec"):
        raise TypeError(
            f"backbone of {entry.name!r} has no input_spec attribute; see "
            "tripletkit.models.input_spec"
        )

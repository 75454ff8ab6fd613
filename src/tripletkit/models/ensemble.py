"""Several embedding models as one: an ensemble whose cosine score is the members' mean.

Each member embeds the input; its unit vector is scaled by ``1/sqrt(n)`` and the ``n`` vectors are
concatenated. The result has unit norm, and the dot product (cosine similarity) of two ensemble
embeddings is the mean of the members' cosine similarities, so any index, evaluation or search
that ranks by cosine distance ranks by the members' averaged scores, with no special code.

Unlike :func:`~tripletkit.models.average_models` (a weight average, the inference cost of one
model, which needs members fine-tuned from one starting point), an ensemble costs one forward
pass per member and takes any members that read the same kind of input: seeds of one recipe,
different recipes, different architectures. Fine-tuning runs of one recipe that differ only by
seed disagree on many hard queries; averaging their scores removes part of that noise (on the
WordNet benchmark, ``benchmarks/results/text_wordnet.md``, three seeds together gain about a
point of Recall@1 over the seeds' mean).

An ensemble is an ordinary registered model (``"ensemble"``, its members' configs in its
config), so :func:`~tripletkit.models.save_model` / :func:`~tripletkit.models.load_model` and
every command that takes a saved model work with it; ``tripletkit ensemble RUN_A RUN_B --out DIR``
writes one. The ensemble embeds in float32 whatever its members' dtype.

>>> import torch
>>> from tripletkit.models import create_model
>>> first = create_model("mlp", in_features=4, embedding_dim=3)
>>> second = create_model("mlp", in_features=4, embedding_dim=5)
>>> both = ensemble_models([first, second])
>>> x, y = torch.randn(2, 4), torch.randn(2, 4)
>>> both.embedding_dim
8
>>> members = [(m(x) * m(y)).sum(1) for m in (first, second)]
>>> torch.allclose((both(x) * both(y)).sum(1), (members[0] + members[1]) / 2, atol=1e-6)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tripletkit.models.embedding import EmbeddingModel
from tripletkit.models.input_spec import TextInputSpec
from tripletkit.models.registry import create_model, create_model_from_config, register_model

__all__ = ["EnsembleBackbone", "build_ensemble", "ensemble_models"]


class EnsembleBackbone(nn.Module):
    """The members' unit embeddings, each scaled by ``1/sqrt(n)``, concatenated: ``(B, Σ D_i)``.

    Args:
        members: one or more :class:`~tripletkit.models.embedding.EmbeddingModel` (or modules
            with ``embedding_dim`` and ``input_spec``) that read the same kind of input. A member
            that does not normalise its output is normalised here.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member; got none")
        specs = []
        for i, member in enumerate(members):
            dim = getattr(member, "embedding_dim", None)
            if not isinstance(dim, int) or dim < 1:
                raise TypeError(
                    f"member {i} ({type(member).__name__}) has no positive int embedding_dim; "
                    "expected an EmbeddingModel"
                )
            specs.append(getattr(member, "input_spec", None))
        first = specs[0]
        for i, spec in enumerate(specs[1:], start=1):
            if type(spec) is not type(first):
                raise ValueError(
                    "the members of an ensemble must read the same kind of input; got member 0: "
                    f"{type(first).__name__}, member {i}: {type(spec).__name__}"
                )
            # Text members tokenise their own strings (each to its own max_length); images and
            # vectors are prepared once, by the first member's spec, so those must be equal.
            if not isinstance(spec, TextInputSpec) and spec != first:
                raise ValueError(
                    "the members of an ensemble must take the same input (images and vectors "
                    f"are prepared once for all of them); member 0 takes {first!r}, member {i} "
                    f"takes {spec!r}"
                )
        self.members = nn.ModuleList(members)
        self.feature_dim = sum(member.embedding_dim for member in members)
        self.input_spec = getattr(members[0], "input_spec", None)

    def forward(self, inputs: Any) -> torch.Tensor:
        scale = 1.0 / math.sqrt(len(self.members))
        parts = [
            nn.functional.normalize(member(inputs), p=2.0, dim=1, eps=1e-12) * scale
            for member in self.members
        ]
        return torch.cat(parts, dim=1)


@register_model(name="ensemble", embedding_dim=None, head="identity")
def build_ensemble(members: list[dict[str, Any]] | None = None) -> nn.Module:
    """Several models as one: their unit embeddings concatenated, cosine = members' mean."""
    if not isinstance(members, (list, tuple)) or not members:
        raise ValueError(
            "the ensemble model needs members: a non-empty list of model configs "
            "(model.config of each member); build one from trained models with ensemble_models"
        )
    built = []
    for i, config in enumerate(members):
        if not isinstance(config, dict):
            raise ValueError(f"members[{i}] must be a model config dict; got {config!r}")
        built.append(create_model_from_config(config))
    return EnsembleBackbone(built)


def ensemble_models(models: Sequence[EmbeddingModel]) -> EmbeddingModel:
    """One model that embeds with every one of ``models`` (see the module docstring).

    The members' weights are copied; ``models`` are left unchanged. The result is an
    :class:`~tripletkit.models.embedding.EmbeddingModel` of the registered ``"ensemble"``
    architecture, which :func:`~tripletkit.models.save_model` can write. An ensemble among
    ``models`` contributes its members (every leaf model weighs the same); a member's
    training-only projector is left out (the ensemble combines embeddings, and has no
    projection of its own).

    Raises:
        ValueError: no models, members that read different kinds of input, or image or
            vector members that take different inputs (shape, channels, normalisation).
        TypeError: a member not built by :func:`~tripletkit.models.create_model` (it has no
            config to rebuild it from).
    """
    models = _flattened(models)
    if not models:
        raise ValueError("ensemble_models needs at least one model; got none")
    configs, states = [], []
    for i, model in enumerate(models):
        config = getattr(model, "config", None)
        if not isinstance(config, dict):
            raise TypeError(
                f"model {i} ({type(model).__name__}) has no config (it was not built by "
                "create_model or load_model), so an ensemble of it could not be saved or rebuilt"
            )
        # Every weight comes from `models` (and, once saved, from the ensemble's own file), so
        # the members are rebuilt without reading bundled pretrained weights. A training-only
        # projector is left out: the ensemble combines the members' embeddings.
        config = {k: v for k, v in config.items() if k not in ("projector", "projector_frozen")}
        configs.append({**config, "pretrained": False})
        states.append(
            {k: v for k, v in model.state_dict().items() if not k.startswith("projector.")}
        )
    result = create_model("ensemble", members=configs)
    for member, state in zip(result.backbone.members, states, strict=True):
        member.load_state_dict(state)
    parameter = next(models[0].parameters(), None)
    if parameter is not None:
        result.to(parameter.device)
    return result.eval()


def _flattened(models: Sequence[EmbeddingModel]) -> list[EmbeddingModel]:
    """``models`` with every ensemble replaced by its members, so that an ensemble of ensembles
    weighs every leaf model equally."""
    flat: list[EmbeddingModel] = []
    for model in models:
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, EnsembleBackbone):
            flat.extend(_flattened(list(backbone.members)))
        else:
            flat.append(model)
    return flat

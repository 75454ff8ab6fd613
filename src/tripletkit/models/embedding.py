"""The embedding model: backbone → projection head → optional L2 normalisation, and batched inference.

``f(x) = normalize(head(backbone(x)))`` with ``normalize(z) = z / max(||z||, 1e-12)``. Build one by
name with :func:`tripletkit.models.create_model`; wrap your own backbone with
:class:`EmbeddingModel` directly (it then has no ``config`` and cannot be saved by name).

An optional training-only *projector* (an MLP, as in SimCLR, Chen et al. 2020) maps the embedding
further for the loss: ``g(x) = normalize(projector(head(backbone(x))))``. The loss trains through
``g`` (``model(x, project=True)``), while ``model(x)``, :meth:`EmbeddingModel.embed`, evaluation and
the index use ``f``: the layer before the projector, which specialises less to the training classes
and so transfers better to classes never seen in training.

A *frozen* projector (``projector_frozen=True``) keeps its random initial weights: the loss then
sees a fixed random projection of the embedding, so every gradient reaching ``f`` lies in the
projector's row space, and the projector costs no weight gradient and no optimizer update. On
Fashion-MNIST's unseen classes this measured better than a trained projector (see the README's
recipe table).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tripletkit.validation import check_choice

__all__ = [
    "HEADS",
    "EmbeddingModel",
    "ProgressCallback",
    "check_projector",
    "make_head",
    "make_projector",
    "uses_projector",
]

#: Projection heads: one linear layer, a two-layer MLP (linear-ReLU-linear), or none.
HEADS: tuple[str, ...] = ("linear", "mlp", "identity")

#: Called after each batch by :meth:`EmbeddingModel.embed` with (items done, total or None).
ProgressCallback = Callable[[int, "int | None"], None]


def make_head(head: str, feature_dim: int, embedding_dim: int) -> nn.Module:
    """The projection from ``(B, feature_dim)`` backbone features to ``(B, embedding_dim)``.

    ``"linear"``: ``W x + b``; ``"mlp"``: ``W2 relu(W1 x + b1) + b2`` with a hidden width of
    ``feature_dim``; ``"identity"``: ``x`` (``embedding_dim`` must equal ``feature_dim``).

    >>> make_head("mlp", 16, 4)(torch.randn(3, 16)).shape
    torch.Size([3, 4])
    """
    check_choice(head, HEADS, "head")
    if head == "identity":
        if embedding_dim != feature_dim:
            raise ValueError(
                f"head='identity' keeps the {feature_dim} backbone features; "
                f"embedding_dim={embedding_dim} needs head='linear' or 'mlp'"
            )
        return nn.Identity()
    if head == "linear":
        return nn.Linear(feature_dim, embedding_dim)
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim),
        nn.ReLU(inplace=True),
        nn.Linear(feature_dim, embedding_dim),
    )


def make_projector(in_dim: int, widths: Sequence[int]) -> nn.Sequential:
    """A training-only MLP projector: linear layers of the given output ``widths``, a ReLU
    before each one (the projector's input, a linear head's output, may be negative).

    >>> make_projector(16, [8, 4])
    Sequential(
      (0): ReLU()
      (1): Linear(in_features=16, out_features=8, bias=True)
      (2): ReLU()
      (3): Linear(in_features=8, out_features=4, bias=True)
    )
    """
    widths = check_projector(widths)
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.ReLU(), nn.Linear(in_dim, width)]
        in_dim = width
    return nn.Sequential(*layers)


def check_projector(widths: Any) -> list[int]:
    """``widths`` as a list of positive ints, or ``ValueError`` naming what is wrong."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
        raise ValueError(
            f"projector must be a non-empty list of layer widths, e.g. [512, 128]; got {widths!r}"
        )
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                f"projector widths must be positive integers, e.g. [512, 128]; got {list(widths)!r}"
            )
    return [int(w) for w in widths]


def check_projector_frozen(projector_frozen: Any, projector: Sequence[int] | None) -> None:
    """Raise ``ValueError`` unless ``projector_frozen`` is a bool, and true only with a projector."""
    if not isinstance(projector_frozen, bool):
        raise ValueError(f"projector_frozen must be True or False; got {projector_frozen!r}")
    if projector_frozen and projector is None:
        raise ValueError("projector_frozen=True needs a projector (e.g. projector=[128])")


def uses_projector(model: nn.Module) -> bool:
    """Whether the loss should train ``model`` through its projector (``model(x, project=True)``):
    an :class:`EmbeddingModel` built with one. Other modules, even with an attribute of that name,
    are called plainly.

    >>> from tripletkit.models import create_model
    >>> uses_projector(create_model("mlp", in_features=4, projector=[8, 2]))
    True
    >>> uses_projector(create_model("mlp", in_features=4))
    False
    """
    return isinstance(model, EmbeddingModel) and model.projector is not None


class EmbeddingModel(nn.Module):
    """A backbone, a projection head and optional L2 normalisation: ``(B, ...) -> (B, D)``.

    Args:
        backbone: an ``nn.Module`` mapping a batch to ``(B, feature_dim)``, with attributes
            ``feature_dim`` and ``input_spec``.
        embedding_dim: D, the output dimension (``None``: the backbone's ``feature_dim``).
        head: ``"linear"``, ``"mlp"`` or ``"identity"`` (see :func:`make_head`).
        normalize: L2-normalise each output row.
        projector: widths of a training-only MLP projector on top of the embedding (see
            :func:`make_projector` and the module docstring), or ``None``.
        config: the JSON-able dict that rebuilds this model through
            :func:`~tripletkit.models.create_model` (set by it; ``None`` for hand-built models).
        projector_frozen: keep the projector at its random initial weights (no gradient); needs
            a projector.

    Attributes:
        backbone, head: the two parts (e.g. to give them different learning rates).
        projector: the training-only projector, or ``None``.
        projector_frozen: whether the projector keeps its initial weights.
        feature_dim: the backbone's output dimension.
        embedding_dim: D.
        loss_dim: the dimension the loss sees: the projector's output, else D.
        input_spec: what the backbone expects (see :mod:`tripletkit.models.input_spec`).

    Example:
        >>> import torch
        >>> from tripletkit.models import create_model
        >>> model = create_model("mlp", in_features=10, embedding_dim=4)
        >>> z = model(torch.randn(5, 10))
        >>> z.shape, bool(torch.allclose(z.norm(dim=1), torch.ones(5)))
        (torch.Size([5, 4]), True)
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int | None = None,
        head: str = "linear",
        normalize: bool = True,
        projector: Sequence[int] | None = None,
        config: Mapping[str, Any] | None = None,
        projector_frozen: bool = False,
    ) -> None:
        super().__init__()
        feature_dim = getattr(backbone, "feature_dim", None)
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise TypeError(
                f"backbone has feature_dim={feature_dim!r}; expected a positive int attribute"
            )
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.embedding_dim = feature_dim if embedding_dim is None else int(embedding_dim)
        self.head = make_head(head, feature_dim, self.embedding_dim)
        self.projector = (
            None if projector is None else make_projector(self.embedding_dim, projector)
        )
        check_projector_frozen(projector_frozen, projector)
        if self.projector is not None and projector_frozen:
            self.projector.requires_grad_(False)
        self.projector_frozen = projector_frozen
        self.loss_dim = self.embedding_dim if projector is None else int(projector[-1])
        self.normalize = bool(normalize)
        self.input_spec = getattr(backbone, "input_spec", None)
        self._config = dict(config) if config is not None else None

    @property
    def config(self) -> dict[str, Any] | None:
        """A copy of the JSON-able dict that rebuilds this architecture: ``create_model(**config)``
        (``None`` for a model not built by the registry)."""
        if self._config is None:
            return None
        config = copy.deepcopy(self._config)
        config["normalize"] = self.normalize
        return config

    def forward(self, inputs: Any, *, project: bool = False) -> torch.Tensor:
        """``(B, ...)`` inputs (a list of strings for text models) → ``(B, embedding_dim)``.

        ``project=True`` returns what the loss trains: the projector's ``(B, loss_dim)`` output
        (normalised as the embedding is); without a projector it is the embedding itself.
        """
        embeddings = self.head(self.backbone(inputs))
        if project and self.projector is not None:
            embeddings = self.projector(embeddings)
        if self.normalize:
            embeddings = F.normalize(embeddings, p=2.0, dim=1, eps=1e-12)
        return embeddings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise ``texts`` as the forward pass does (text models only): a dict of ``(B, T)``
        tensors that the forward pass and :meth:`embed` accept in place of the strings."""
        tokenize = getattr(self.backbone, "tokenize", None)
        if tokenize is None:
            raise TypeError(f"{type(self.backbone).__name__} takes tensors, not text")
        return tokenize(texts)

    def embed(
        self,
        inputs: Any,
        batch_size: int = 256,
        *,
        device: torch.device | str | None = None,
        progress: bool | ProgressCallback = False,
        project: bool = False,
    ) -> torch.Tensor:
        """Embed many inputs in batches, without gradients, in eval mode: ``(N, embedding_dim)``.

        The model is put in eval mode for the call (batch norm uses its running statistics, so the
        result does not depend on ``batch_size``) and its previous mode is restored afterwards.

        Args:
            inputs: one of

                * a tensor or numpy array ``(N, ...)``, split into batches of ``batch_size``;
                * a list of strings (text models), split the same way;
                * an iterable of batches, e.g. a ``DataLoader``: each batch is a tensor, a list
                  of strings, a tokenised dict, or a tuple/list whose first element is the input
                  (such as ``(images, labels)``; the rest is ignored).

                Floating inputs are cast to the model's dtype.
            batch_size: rows per forward pass when ``inputs`` is not already batched.
            device: where to run (default: where the model's parameters are). The model is not
                moved; give a device the model is on.
            progress: ``True`` writes a counter to stderr; a callable is called after every batch
                as ``progress(done, total)`` (``total`` is ``None`` when unknown). Nothing is
                shown by default.
            project: the projector's outputs, as the loss sees them (see :meth:`forward`).

        Returns:
            float32 tensor ``(N, embedding_dim)`` (``(N, loss_dim)`` with ``project``) on the CPU.

        Example:
            >>> import torch
            >>> from tripletkit.models import create_model
            >>> model = create_model("mlp", in_features=6, embedding_dim=3)
            >>> x = torch.randn(10, 6)
            >>> z = model.embed(x, batch_size=4)
            >>> z.shape, z.dtype, z.requires_grad
            (torch.Size([10, 3]), torch.float32, False)
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        report = _progress_reporter(progress)
        parameter = next(self.parameters(), None)
        run_device = torch.device(device) if device is not None else _device_of(parameter)
        dtype = parameter.dtype if parameter is not None else torch.float32
        batches, total = _batches(inputs, batch_size)
        was_training = self.training
        self.eval()
        outputs: list[torch.Tensor] = []
        done = 0
        try:
            with torch.no_grad():
                for batch in batches:
                    out = self(_to_device(batch, run_device, dtype), project=project)
                    outputs.append(out.float().cpu())
                    done += out.shape[0]
                    report(done, total)
        finally:
            self.train(was_training)
            report.close()
        if not outputs:
            return torch.empty(0, self.loss_dim if project else self.embedding_dim)
        return torch.cat(outputs)


def _device_of(parameter: torch.Tensor | None) -> torch.device:
    return parameter.device if parameter is not None else torch.device("cpu")


def _batches(inputs: Any, batch_size: int) -> tuple[Iterator[Any], int | None]:
    """Split ``inputs`` into model-ready batches; also return the item count if known."""
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs is a 0-d tensor; expected a batch (N, ...)")
        return iter(inputs.split(batch_size)), inputs.shape[0]
    if isinstance(inputs, str):
        raise TypeError("inputs is a single string; pass a list of strings")
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        chunks = (list(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size))
        return chunks, len(inputs)
    if isinstance(inputs, Mapping):
        raise TypeError(
            "inputs is a dict; pass an iterable of batches (a tokenised dict is one batch: "
            "wrap it in a list)"
        )
    if not isinstance(inputs, Iterable):
        raise TypeError(
            f"inputs must be a tensor, a list of strings or an iterable of batches; "
            f"got {type(inputs).__name__}"
        )
    total = None
    dataset = getattr(inputs, "dataset", None)
    try:
        total = len(dataset) if dataset is not None else None
    except TypeError:
        total = None
    return (_batch_input(batch) for batch in inputs), total


def _batch_input(batch: Any) -> Any:
    """The model input within one batch of an iterable (drops labels from ``(x, y)`` pairs)."""
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(batch)
    if isinstance(batch, (torch.Tensor, Mapping)):
        return batch
    if isinstance(batch, (list, tuple)) and batch:
        if all(isinstance(t, str) for t in batch):
            return list(batch)
        return _batch_input(batch[0])
    raise TypeError(
        f"a batch is a {type(batch).__name__}; expected a tensor, a list of strings, a tokenised "
        "dict, or a tuple whose first element is the input"
    )


def _to_device(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point() and batch.dtype != dtype:
            batch = batch.to(dtype)
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch


class _Reporter:
    """Calls the user's callback, writes a counter to stderr, or does nothing."""

    def __init__(self, callback: ProgressCallback | None, to_stderr: bool) -> None:
        self.callback = callback
        self.to_stderr = to_stderr
        self.written = False

    def __call__(self, done: int, total: int | None) -> None:
        if self.callback is not None:
            self.callback(done, total)
        if self.to_stderr:
            of_total = f"/{total}" if total is not None else ""
            sys.stderr.write(f"\rembedded {done}{of_total}")
            sys.stderr.flush()
            self.written = True

    def close(self) -> None:
        if self.written:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _progress_reporter(progress: bool | ProgressCallback) -> _Reporter:
    if isinstance(progress, bool):
        return _Reporter(None, progress)
    if callable(progress):
        return _Reporter(progress, False)
    raise TypeError(
        f"progress must be True, False or a callable(done, total); got {type(progress).__name__}"
    )

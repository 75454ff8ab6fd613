"""EmbeddingModel: head, normalisation, gradients, and embed() against one big forward pass."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tripletkit.models import EmbeddingModel, VectorInputSpec, create_model, make_head, save_model


class _Zeros(nn.Module):
    """A backbone whose features are all zero: the normalisation's worst case."""

    feature_dim = 3
    input_spec = VectorInputSpec(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _trained_batch_norm_cnn() -> EmbeddingModel:
    """A small CNN whose batch-norm running statistics are not the defaults."""
    torch.manual_seed(0)
    model = create_model("small_cnn")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 12, 12) * 2 + 1)
    return model


def test_output_rows_are_unit_vectors_equal_to_a_float64_reference() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", in_features=6, embedding_dim=5)
    x = torch.randn(7, 6)
    raw = model.head(model.backbone(x)).double()
    expected = raw / raw.pow(2).sum(dim=1, keepdim=True).sqrt()
    out = model(x)
    assert out.shape == (7, 5)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


def test_normalize_false_returns_the_head_output() -> None:
    model = create_model("mlp", in_features=6, embedding_dim=5, normalize=False)
    x = torch.randn(4, 6)
    assert torch.equal(model(x), model.head(model.backbone(x)))
    assert model.config["normalize"] is False
    model.normalize = True
    assert model.config["normalize"] is True


def test_zero_features_normalise_to_zero_not_nan() -> None:
    model = EmbeddingModel(_Zeros(), head="identity")
    assert torch.equal(model(torch.randn(2, 3)), torch.zeros(2, 3))


def test_same_seed_same_model_and_outputs() -> None:
    x = torch.randn(4, 1, 28, 28)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model("small_cnn").eval()
        outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(124)
    assert not torch.equal(create_model("small_cnn").eval()(x), outputs[0])


@pytest.mark.parametrize(
    ("name", "options", "batch"),
    [
        ("mlp", {"in_features": 6, "batch_norm": True, "dropout": 0.1}, torch.randn(8, 6)),
        ("small_cnn", {"head": "mlp"}, torch.randn(8, 1, 10, 10)),
        ("resnet18", {"zero_init_residual": False, "stem": "small"}, torch.randn(8, 3, 8, 8)),
    ],
)
def test_every_parameter_gets_a_finite_nonzero_gradient(
    name: str, options: dict, batch: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = create_model(name, **options).train()
    labels = torch.arange(batch.shape[0]) % 2
    z = model(batch)
    # A contrastive-style objective that depends on every output coordinate.
    similarity = z @ z.T
    same = labels[:, None] == labels[None, :]
    loss = similarity[~same].mean() - similarity[same].mean()
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_make_head_shapes_and_errors() -> None:
    x = torch.randn(3, 8)
    assert make_head("linear", 8, 2)(x).shape == (3, 2)
    assert make_head("mlp", 8, 2)(x).shape == (3, 2)
    assert torch.equal(make_head("identity", 8, 8)(x), x)
    with pytest.raises(ValueError, match="head='identity' keeps the 8 backbone features"):
        make_head("identity", 8, 4)
    with pytest.raises(ValueError, match="unknown head"):
        make_head("attention", 8, 4)


def test_hand_built_model_has_no_config_and_cannot_be_saved(tmp_path) -> None:
    model = EmbeddingModel(_Zeros(), embedding_dim=2)
    assert model.config is None
    with pytest.raises(ValueError, match="no config"):
        save_model(model, tmp_path)
    with pytest.raises(TypeError, match="feature_dim"):
        EmbeddingModel(nn.Linear(3, 3))


# ---- embed() ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_embed_in_batches_equals_one_big_forward(batch_size: int) -> None:
    model = _trained_batch_norm_cnn()
    x = torch.randn(20, 1, 12, 12)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    model.train()
    out = model.embed(x, batch_size=batch_size)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_embed_restores_mode_and_leaves_statistics_alone() -> None:
    model = _trained_batch_norm_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    z = model.embed(torch.randn(10, 1, 12, 12), batch_size=4)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert z.dtype == torch.float32 and z.device.type == "cpu" and not z.requires_grad
    model.eval()
    model.embed(torch.randn(2, 1, 12, 12))
    assert not model.training


def test_embed_accepts_dataloaders_lists_arrays_and_generators() -> None:
    model = _trained_batch_norm_cnn()
    x = torch.randn(10, 1, 12, 12)
    expected = model.embed(x)
    labels = torch.arange(10)
    loader = DataLoader(TensorDataset(x, labels), batch_size=4)
    torch.testing.assert_close(model.embed(loader), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.embed(list(x.split(3))), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.embed(x.numpy()), expected, rtol=0, atol=1e-6)
    generator = ((x[i : i + 5], labels[i : i + 5]) for i in range(0, 10, 5))
    torch.testing.assert_close(model.embed(generator), expected, rtol=0, atol=1e-6)
    # float64 inputs are cast to the model's dtype.
    torch.testing.assert_close(model.embed(x.double()), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        model.embed(np.asarray(x, dtype=np.float64)), expected, rtol=0, atol=1e-6
    )


def test_embed_of_nothing_is_an_empty_matrix() -> None:
    model = create_model("mlp", in_features=3, embedding_dim=5)
    assert model.embed(torch.empty(0, 3)).shape == (0, 5)
    assert model.embed([]).shape == (0, 5)


def test_embed_reports_progress_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("mlp", in_features=3)
    x = torch.randn(10, 3)
    calls: list[tuple[int, int | None]] = []
    model.embed(x, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]

    calls.clear()
    loader = DataLoader(TensorDataset(x), batch_size=6)
    model.embed(loader, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(6, 10), (10, 10)]

    calls.clear()
    model.embed(iter([x[:2], x[2:]]), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, None), (10, None)]

    model.embed(x, batch_size=4)
    assert capsys.readouterr().err == ""
    model.embed(x, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "embedded 10/10" in err and err.endswith("\n")


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ("one text", TypeError, "single string"),
        ({"x": torch.zeros(1)}, TypeError, "dict"),
        (42, TypeError, "iterable of batches"),
        ([{1, 2}], TypeError, "a batch is a set"),
        (torch.tensor(1.0), ValueError, "0-d"),
    ],
)
def test_embed_rejects_unusable_inputs(inputs: object, error: type, message: str) -> None:
    model = create_model("mlp", in_features=3)
    with pytest.raises(error, match=message):
        model.embed(inputs)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_embed_rejects_bad_batch_sizes(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        create_model("mlp", in_features=3).embed(torch.randn(2, 3), batch_size=batch_size)


def test_embed_rejects_bad_progress() -> None:
    with pytest.raises(TypeError, match="progress must be"):
        create_model("mlp", in_features=3).embed(torch.randn(2, 3), progress="yes")


def test_tokenize_is_only_for_text_models() -> None:
    with pytest.raises(TypeError, match="takes tensors, not text"):
        create_model("mlp", in_features=3).tokenize(["a"])


def _projector_reference(
    model: EmbeddingModel, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding and the projector's output, by hand in float64 from the layers' weights."""
    raw = model.head(model.backbone(x)).double()
    projected = raw
    for layer in model.projector:
        if isinstance(layer, nn.Linear):
            projected = projected @ layer.weight.double().T + layer.bias.double()
        else:
            projected = projected.clamp_min(0)

    def unit(z: torch.Tensor) -> torch.Tensor:
        return z / z.pow(2).sum(dim=1, keepdim=True).sqrt()

    return unit(raw), unit(projected)


def test_the_projector_is_what_the_loss_sees_and_the_embedding_stays_before_it() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", in_features=6, embedding_dim=5, projector=[7, 3])
    assert (model.embedding_dim, model.loss_dim) == (5, 3)
    x = torch.randn(9, 6)
    embedding, projected = _projector_reference(model, x)
    torch.testing.assert_close(model(x).double(), embedding, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(x, project=True).double(), projected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.embed(x).double(), embedding, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.embed(x, project=True).double(), projected, rtol=0, atol=1e-6)
    assert model.embed(x[:0], project=True).shape == (0, 3)
    # Training through the projector reaches every layer; the embedding alone never uses it.
    model(x, project=True).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    assert all(p.grad is None for p in model.projector.parameters())


def test_without_a_projector_project_returns_the_embedding() -> None:
    model = create_model("mlp", in_features=6, embedding_dim=5)
    x = torch.randn(4, 6)
    assert model.projector is None and model.loss_dim == 5
    assert torch.equal(model(x, project=True), model(x))
    assert "projector" not in model.config


def test_a_projector_survives_config_rebuild_and_save_load(tmp_path) -> None:
    from tripletkit.models import load_model

    torch.manual_seed(0)
    model = create_model("mlp", in_features=6, embedding_dim=5, projector=[7, 3])
    assert model.config["projector"] == [7, 3]
    assert create_model(**model.config).config == model.config
    x = torch.randn(4, 6)
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert torch.equal(loaded.embed(x, project=True), model.embed(x, project=True))
    assert torch.equal(loaded.embed(x), model.embed(x))


def test_a_frozen_projector_keeps_its_weights_and_passes_gradients_through(tmp_path) -> None:
    from tripletkit.models import load_model

    torch.manual_seed(0)
    model = create_model(
        "mlp", in_features=6, embedding_dim=5, projector=[7, 3], projector_frozen=True
    )
    assert model.projector_frozen and model.config["projector_frozen"] is True
    assert not any(p.requires_grad for p in model.projector.parameters())
    x = torch.randn(9, 6)
    _, projected = _projector_reference(model, x)
    torch.testing.assert_close(model(x, project=True).double(), projected, rtol=0, atol=1e-6)
    model(x, project=True).sum().backward()
    assert all(p.grad is None for p in model.projector.parameters())
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for name, p in model.named_parameters()
        if not name.startswith("projector.")
    )
    # The config rebuilds a frozen projector, and a saved model loads as one.
    assert create_model(**model.config).config == model.config
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.projector_frozen
    assert not any(p.requires_grad for p in loaded.projector.parameters())
    assert torch.equal(loaded.embed(x, project=True), model.embed(x, project=True))
    # A trainable projector's config does not carry the key (older saved configs stay equal).
    assert "projector_frozen" not in create_model("mlp", in_features=6, projector=[3]).config


@pytest.mark.parametrize(
    ("projector", "frozen", "message"),
    [(None, True, "needs a projector"), ([3], "yes", "True or False"), ([3], 1, "True or False")],
)
def test_a_bad_projector_frozen_is_refused(projector, frozen, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(
            "mlp", in_features=6, embedding_dim=5, projector=projector, projector_frozen=frozen
        )


@pytest.mark.parametrize("widths", [[], [0], [4, -1], [2.5], "12", True, [True], None])
def test_bad_projector_widths_are_refused_with_the_expected_form(widths: object) -> None:
    from tripletkit.models.embedding import make_projector

    with pytest.raises(ValueError, match=r"projector .*e\.g\. \[512, 128\]"):
        make_projector(5, widths)  # type: ignore[arg-type]
    if widths is not None:
        with pytest.raises(ValueError, match="projector"):
            create_model("mlp", in_features=6, embedding_dim=5, projector=widths)


def test_a_bad_projector_frozen_is_refused_before_the_backbone_is_built(monkeypatch) -> None:
    # A text or EfficientNet backbone takes seconds to build: the argument is checked first.
    from tripletkit.models import registry

    entry = registry.get_model_entry("mlp")
    built = []

    @functools.wraps(entry.builder)  # the same signature: create_model binds options by it
    def counting_builder(**options):
        built.append(options)
        return entry.builder(**options)

    monkeypatch.setitem(
        registry._REGISTRY, "mlp", dataclasses.replace(entry, builder=counting_builder)
    )
    create_model("mlp", in_features=6, projector=[3], projector_frozen=True)
    assert len(built) == 1  # the counting builder is the one create_model calls
    for projector, frozen in [(None, True), ([3], "yes")]:
        with pytest.raises(ValueError, match="projector_frozen"):
            create_model("mlp", in_features=6, projector=projector, projector_frozen=frozen)
    assert len(built) == 1

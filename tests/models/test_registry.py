"""The model registry: names, options, errors, and configs that rebuild the same architecture."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from tripletkit.models import (
    EmbeddingModel,
    VectorInputSpec,
    create_model,
    create_model_from_config,
    get_model_entry,
    list_models,
    register_model,
    unregister_model,
)

BUILT_IN = {"mlp", "small_cnn", "resnet18", "resnet34", "efficientnet_lite0", "text_encoder"}

# Cheap models and options: (name, options, an input batch).
CHEAP = [
    ("mlp", {"in_features": 12, "hidden_dims": (32, 16)}, torch.randn(3, 12)),
    ("small_cnn", {}, torch.randn(3, 1, 28, 28)),
    ("small_cnn", {"in_channels": 3, "embedding_dim": 16, "head": "mlp"}, torch.randn(3, 3, 9, 9)),
    ("resnet18", {"stem": "small", "in_channels": 1}, torch.randn(3, 1, 16, 16)),
]


class _Constant(nn.Module):
    """A backbone for registry tests: ``(B, n) -> (B, n)`` times a learnable scale."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.feature_dim = in_features
        self.input_spec = VectorInputSpec(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@pytest.fixture
def temporary_name() -> Iterator[str]:
    name = "test_registry_constant"
    yield name
    if name in list_models():
        unregister_model(name)


def test_built_in_models_are_listed() -> None:
    assert BUILT_IN <= set(list_models())
    assert list_models() == sorted(list_models())
    assert list_models("resnet*") == ["resnet18", "resnet34"]
    assert set(list_models(pretrained=True)) == {"efficientnet_lite0", "text_encoder"}
    for name in BUILT_IN:
        assert get_model_entry(name).description


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("resnet-18", "resnet18"),
        ("smallcnn", "small_cnn"),
        ("efficientnet-lite0", "efficientnet_lite0"),
    ],
)
def test_unknown_name_lists_accepted_and_suggests_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ValueError) as info:
        create_model(name)
    message = str(info.value)
    assert f"unknown model {name!r}" in message
    assert all(built_in in message for built_in in BUILT_IN)
    assert message.endswith(f"did you mean {suggestion!r}?")


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(ValueError, match="accepted: ") as info:
        create_model("zzzzzzzz")
    assert "did you mean" not in str(info.value)


def test_unknown_option_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) 'in_channel' \(did you mean 'in_channels'\?\)"
    ):
        create_model("small_cnn", in_channel=3)


def test_missing_required_option() -> None:
    with pytest.raises(ValueError, match=r"'mlp' needs option\(s\) in_features"):
        create_model("mlp")


def test_pretrained_true_without_weights_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no bundled pretrained weights.*efficientnet_lite0"):
        create_model("resnet18", pretrained=True)
    assert create_model("small_cnn", pretrained=False).config["pretrained"] is False


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_embedding_dim_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="embedding_dim must be a positive integer"):
        create_model("small_cnn", embedding_dim=bad)


def test_bad_head_and_normalize_values() -> None:
    with pytest.raises(
        ValueError, match="unknown head 'conv'; accepted: 'linear', 'mlp', 'identity'"
    ):
        create_model("small_cnn", head="conv")
    with pytest.raises(ValueError, match="normalize must be True or False"):
        create_model("small_cnn", normalize="yes")
    with pytest.raises(ValueError, match="head='identity' outputs the backbone's 128 features"):
        create_model("small_cnn", head="identity", embedding_dim=64)


def test_identity_head_outputs_backbone_features() -> None:
    model = create_model("small_cnn", head="identity")
    assert model.embedding_dim == model.feature_dim == 128
    assert model.config["embedding_dim"] == 128
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    features = model.backbone(x)
    torch.testing.assert_close(model(x), features / features.norm(dim=1, keepdim=True))


def test_defaults_per_model() -> None:
    assert create_model("small_cnn").embedding_dim == 64
    assert create_model("mlp", in_features=4).embedding_dim == 64
    assert create_model("resnet18").embedding_dim == 128
    assert create_model("small_cnn", embedding_dim=32).embedding_dim == 32


@pytest.mark.parametrize(("name", "options", "batch"), CHEAP)
def test_config_is_json_and_rebuilds_the_same_architecture(
    name: str, options: dict, batch: torch.Tensor
) -> None:
    model = create_model(name, **options)
    config = model.config
    assert json.loads(json.dumps(config)) == config
    rebuilt = create_model(**json.loads(json.dumps(config)))
    assert rebuilt.config == config
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(batch), model(batch))


def test_config_records_every_option_with_its_default() -> None:
    config = create_model("mlp", in_features=5, hidden_dims=(8, 4)).config
    assert config == {
        "name": "mlp",
        "pretrained": False,
        "embedding_dim": 64,
        "normalize": True,
        "head": "linear",
        "in_features": 5,
        "hidden_dims": [8, 4],
        "dropout": 0.0,
        "batch_norm": False,
    }
    assert create_model_from_config(config).config == config


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="no 'name'"):
        create_model_from_config({"embedding_dim": 3})
    with pytest.raises(TypeError, match="dict"):
        create_model_from_config(["mlp"])
    with pytest.raises(ValueError, match="cannot be stored in a JSON config"):
        create_model("mlp", in_features=3, hidden_dims=[object()])


def test_register_a_custom_backbone(temporary_name: str) -> None:
    @register_model(name=temporary_name, embedding_dim=None, head="identity")
    def build(in_features: int = 3) -> nn.Module:
        """Multiply by a learnable scale."""
        return _Constant(in_features)

    assert temporary_name in list_models()
    entry = get_model_entry(temporary_name)
    assert entry.description == "Multiply by a learnable scale."
    assert entry.options == ("in_features",) and not entry.has_pretrained
    model = create_model(temporary_name, in_features=4, normalize=False)
    assert isinstance(model, EmbeddingModel)
    x = torch.randn(2, 4)
    assert torch.equal(model(x), x)
    # An explicit embedding_dim adds a linear projection to a model whose default is no head.
    projected = create_model(temporary_name, in_features=4, embedding_dim=2)
    assert projected.config["head"] == "linear" and projected(x).shape == (2, 2)
    with pytest.raises(ValueError, match="already registered"):
        register_model(name=temporary_name)(lambda: _Constant(1))
    unregister_model(temporary_name)
    assert temporary_name not in list_models()


def test_bare_decorator_uses_the_function_name() -> None:
    def test_registry_bare(in_features: int = 2) -> nn.Module:
        return _Constant(in_features)

    assert register_model(test_registry_bare) is test_registry_bare
    try:
        assert get_model_entry("test_registry_bare").embedding_dim == 128
        assert create_model("test_registry_bare")(torch.randn(1, 2)).shape == (1, 128)
    finally:
        unregister_model("test_registry_bare")


def test_builder_contract_is_enforced(temporary_name: str) -> None:
    with pytest.raises(ValueError, match="takes embedding_dim, which create_model consumes"):
        register_model(name=temporary_name)(lambda embedding_dim=3: _Constant(3))
    with pytest.raises(ValueError, match="takes no 'pretrained' argument"):
        register_model(name=temporary_name, pretrained=True)(lambda: _Constant(3))
    with pytest.raises(ValueError, match="unknown head"):
        register_model(name=temporary_name, head="none")(lambda: _Constant(3))

    register_model(name=temporary_name)(lambda: torch.zeros(3))
    with pytest.raises(TypeError, match=r"expected an nn\.Module"):
        create_model(temporary_name)
    unregister_model(temporary_name)
    register_model(name=temporary_name)(lambda: nn.Linear(2, 2))
    with pytest.raises(TypeError, match="feature_dim"):
        create_model(temporary_name)
    with pytest.raises(ValueError, match="unknown model"):
        unregister_model("never_registered_model")

"""Backbones trained from scratch: the exact small CNN, ResNet-18/34, the MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tripletkit.models import create_model
from tripletkit.models.cnn import SmallCNN
from tripletkit.models.mlp import MLPBackbone
from tripletkit.models.resnet import BasicBlock, ResNet


def _reference_small_cnn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The benchmark architecture written out with torch.nn.functional from ``model``'s weights,
    in eval mode, in float64: 3 × (conv3x3 → BN → ReLU → maxpool 2) → global mean → linear → L2."""
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    h = x.double()
    for conv, norm in zip(convs, norms, strict=True):
        h = F.conv2d(h, conv.weight.double(), padding=1)
        h = (h - norm.running_mean.double()[:, None, None]) / torch.sqrt(
            norm.running_var.double()[:, None, None] + norm.eps
        )
        h = h * norm.weight.double()[:, None, None] + norm.bias.double()[:, None, None]
        h = F.max_pool2d(h.clamp_min(0), 2, ceil_mode=True)
    features = h.mean(dim=(2, 3))
    z = features @ model.head.weight.double().T + model.head.bias.double()
    return z / z.norm(dim=1, keepdim=True)


def test_small_cnn_is_exactly_the_benchmark_architecture() -> None:
    model = create_model("small_cnn")
    layers = [type(m) for m in model.backbone.blocks]
    # ReLU and max-pool run in the other order, the same function (the next test).
    assert layers == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU] * 3
    convs = [m for m in model.backbone.blocks if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
        (64, 128, (3, 3)),
    ]
    assert isinstance(model.head, nn.Linear) and (
        model.head.in_features,
        model.head.out_features,
    ) == (
        128,
        64,
    )
    assert model.normalize and model.embedding_dim == 64
    # By hand: convs 1·32·9 + 32·64·9 + 64·128·9, batch norms 2·(32+64+128), head 128·64 + 64.
    assert sum(p.numel() for p in model.parameters()) == 288 + 18432 + 73728 + 448 + 8256


@pytest.mark.parametrize(
    ("channels", "height", "width"), [(1, 28, 28), (1, 8, 8), (3, 7, 5), (1, 1, 1)]
)
def test_small_cnn_matches_a_functional_float64_reference(
    channels: int, height: int, width: int
) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", in_channels=channels)
    model.train()
    with torch.no_grad():  # move the batch-norm statistics away from their defaults
        model(torch.randn(32, channels, height, width) * 3 + 1)
    model.eval()
    x = torch.randn(5, channels, height, width)
    out = model(x)
    assert out.shape == (5, 64)
    torch.testing.assert_close(out.double(), _reference_small_cnn(model, x), rtol=0, atol=1e-5)


def _relu_then_pool(stack: nn.Sequential) -> nn.Sequential:
    """``stack`` with every (max-pool, ReLU) pair put back in the textbook order ReLU, max-pool
    (the same module objects, so the same weights)."""
    layers = list(stack)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 7, 5)])
def test_small_cnn_pool_before_relu_gives_the_textbook_values_and_gradients(
    shape: tuple[int, int, int],
) -> None:
    """The blocks run max-pool before ReLU; in training mode (batch statistics) in float64 the
    output and every parameter gradient equal those of conv → BN → ReLU → max-pool, exactly: the
    order changes which work is done, not the function."""
    torch.manual_seed(0)
    backbone = SmallCNN(in_channels=shape[0]).double().train()
    textbook = _relu_then_pool(backbone.blocks)
    assert [type(m) for m in textbook] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d] * 3
    x = torch.randn(8, *shape, dtype=torch.float64)
    with torch.no_grad():
        weights = torch.randn_like(backbone.blocks(x.clone()))

    def gradients(blocks: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        backbone.zero_grad(set_to_none=True)
        features = blocks(x.clone())
        (features * weights).sum().backward()
        return features.detach(), [p.grad.clone() for p in backbone.parameters()]

    ours, ours_grads = gradients(backbone.blocks)
    reference, reference_grads = gradients(textbook)
    assert (reference == 0).any() and (reference > 0).any()  # both ReLU sides are exercised
    assert torch.equal(ours, reference)
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_resnet_stem_pool_before_relu_gives_the_textbook_values_and_gradients() -> None:
    torch.manual_seed(0)
    stem = ResNet((1, 1, 1, 1), in_channels=3).stem.double().train()
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU]
    textbook = _relu_then_pool(stem)
    x = torch.randn(2, 3, 33, 30, dtype=torch.float64)
    results = []
    for blocks in (stem, textbook):
        stem.zero_grad(set_to_none=True)
        out = blocks(x)
        (
            out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
        ).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in stem.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for mine, theirs in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool_size", [1, 4])
def test_small_cnn_backward_runs_channels_last_with_the_same_gradients(
    pool_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gradient entering the conv blocks is channels-last like their saved activations (a
    layout mismatch makes oneDNN convert at every layer), and the weight gradients are those of
    the same network run in plain NCHW layout."""
    torch.manual_seed(0)
    model = create_model("small_cnn", pool_size=pool_size, head="identity")
    x = torch.randn(6, 1, 28, 28)
    outputs: list[torch.Tensor] = []
    handle = model.backbone.blocks.register_forward_hook(lambda m, i, out: outputs.append(out))
    embedding = model(x)
    handle.remove()
    # Registered after the model's own hooks, this one sees the gradient the blocks receive.
    seen: list[torch.Tensor] = []
    outputs[0].register_hook(seen.append)
    (embedding * torch.linspace(-1, 1, model.embedding_dim)).sum().backward()
    assert len(seen) == 1 and seen[0].is_contiguous(memory_format=torch.channels_last)
    # The reference: the same weights in NCHW layout, the gradient left as it arrives.
    import tripletkit.models.cnn as cnn

    monkeypatch.setattr(cnn, "_channels_last", lambda gradient: gradient)
    plain = create_model("small_cnn", pool_size=pool_size, head="identity")
    plain.load_state_dict(model.state_dict())
    plain.backbone.blocks.to(memory_format=torch.contiguous_format)
    (plain(x) * torch.linspace(-1, 1, plain.embedding_dim)).sum().backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():  # no gradient, no hook
        assert not model(x).requires_grad


def test_small_cnn_says_what_input_it_needs() -> None:
    model = create_model("small_cnn")
    with pytest.raises(ValueError, match=r"expected a float tensor of shape \(B, 1, H, W\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        SmallCNN(in_channels=0)
    spec = model.input_spec
    assert (spec.channels, spec.image_size, spec.mean, spec.std) == (1, None, (0.5,), (0.5,))


# Published sizes: torchvision's resnet18 / resnet34 have 11,689,512 / 21,797,672 parameters
# including the 512 → 1000 classifier (513,000).
@pytest.mark.parametrize(
    ("name", "expected"), [("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000)]
)
def test_resnet_parameter_counts_match_the_published_ones(name: str, expected: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.backbone.parameters()) == expected
    assert model.feature_dim == 512 and model.embedding_dim == 128


@pytest.mark.parametrize(
    ("stem", "size", "stage_sizes"),
    [("imagenet", 64, [16, 8, 4, 2]), ("small", 28, [28, 14, 7, 4])],
)
def test_resnet_stems_set_the_resolution(stem: str, size: int, stage_sizes: list[int]) -> None:
    model = create_model("resnet18", stem=stem, in_channels=1).eval()
    seen: list[int] = []
    hooks = [
        s.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
        for s in model.backbone.stages
    ]
    out = model(torch.randn(2, 1, size, size))
    for hook in hooks:
        hook.remove()
    assert seen == stage_sizes
    assert out.shape == (2, 128)


def test_resnet_zero_init_makes_blocks_start_as_identity() -> None:
    block_input = torch.randn(2, 64, 6, 6).clamp_min(0)  # a block sees post-ReLU activations
    resnet = ResNet((1, 1, 1, 1), in_channels=3, zero_init_residual=True).eval()
    first_block = resnet.stages[0][0]
    assert isinstance(first_block, BasicBlock)
    assert torch.equal(first_block(block_input), block_input)
    plain = ResNet((1, 1, 1, 1), in_channels=3, zero_init_residual=False).eval()
    assert not torch.equal(plain.stages[0][0](block_input), block_input)


def test_resnet_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown stem 'cifar'; accepted: 'imagenet', 'small'"):
        create_model("resnet18", stem="cifar")
    with pytest.raises(ValueError, match="in_channels"):
        create_model("resnet34", in_channels=0)


def test_mlp_layers_and_passthrough() -> None:
    backbone = MLPBackbone(6, hidden_dims=(8, 4), dropout=0.5, batch_norm=True)
    assert [type(m) for m in backbone.layers] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
    ] * 2
    assert backbone.feature_dim == 4
    empty = MLPBackbone(6, hidden_dims=())
    x = torch.randn(3, 6)
    assert empty.feature_dim == 6 and torch.equal(empty(x), x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"in_features": 0}, "in_features"),
        ({"in_features": 3, "hidden_dims": (4, 0)}, "hidden_dims"),
        ({"in_features": 3, "dropout": 1.0}, "dropout"),
    ],
)
def test_mlp_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("mlp", **options)


def test_mlp_says_what_input_it_needs() -> None:
    with pytest.raises(ValueError, match=r"expected a float tensor of shape \(B, 5\)"):
        create_model("mlp", in_features=5)(torch.randn(2, 4))

"""The losses on a CUDA device: the same results as the float64 reference and as the CPU.

Skipped where there is no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/functional/test_cuda.py``. On CUDA the batch triplet loss takes its torch
kernels (numba runs on CPU only). The property tests against the float64 reference run on the
device from ``test_batch_triplet.py`` (its ``DEVICES``); these check the device against the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from tripletkit.functional import MINING_MODES, batch_triplet_loss
from tripletkit.losses import create_loss, list_losses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("mining", MINING_MODES)
def test_cuda_agrees_with_the_cpu_kernels_at_a_larger_batch(mining):
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.nn.functional.normalize(torch.randn(1500, 32, generator=generator), dim=1)
    labels = torch.randint(0, 100, (1500,), generator=generator)
    results = []
    for device, chunk_size in [("cpu", None), ("cuda", None), ("cuda", 256)]:
        x = embeddings.double().to(device).requires_grad_()
        loss = batch_triplet_loss(x, labels.to(device), mining=mining, chunk_size=chunk_size)
        loss.backward()
        results.append((loss.detach().cpu(), x.grad.cpu()))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mining", MINING_MODES)
def test_half_precision_on_cuda_computes_in_float32(dtype, mining):
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.nn.functional.normalize(torch.randn(256, 16, generator=generator), dim=1)
    labels = torch.randint(0, 16, (256,), generator=generator).cuda()
    half = embeddings.to("cuda", dtype).requires_grad_()
    loss = batch_triplet_loss(half, labels, mining=mining)
    loss.backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()
    full = batch_triplet_loss(half.detach().float(), labels, mining=mining)
    torch.testing.assert_close(loss.detach(), full, rtol=1e-5, atol=1e-6)


# Losses that draw random samples: the CPU and CUDA generators give different draws.
STOCHASTIC_LOSSES = {"distance_weighted_margin"}


@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_gives_the_cpu_result_on_cuda(name):
    generator = torch.Generator().manual_seed(6)
    embeddings = torch.nn.functional.normalize(
        torch.randn(64, 16, generator=generator, dtype=torch.float64), dim=1
    )
    labels = torch.randint(0, 8, (64,), generator=generator)
    outcomes = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)  # the same proxies on both devices
        loss_fn = create_loss(name, num_classes=8, embedding_dim=16).double().to(device)
        x = embeddings.to(device).requires_grad_()
        loss = loss_fn(x, labels.to(device))
        loss.backward()
        assert math.isfinite(float(loss.detach()))
        assert torch.isfinite(x.grad).all()
        outcomes.append((loss.detach().cpu(), x.grad.cpu()))
    if name in STOCHASTIC_LOSSES:
        return
    torch.testing.assert_close(outcomes[1][0], outcomes[0][0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(outcomes[1][1], outcomes[0][1], rtol=1e-7, atol=1e-10)

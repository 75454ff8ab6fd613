"""Mining across processes: 2 CPU ranks (gloo) against the single-process loss and gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tripletkit.mining import gather_batch, gather_with_grad

WORKER = Path(__file__).with_name("distributed_worker.py")
sys.path.insert(0, str(WORKER.parent))
from distributed_worker import SIZES, losses, shared_problem  # noqa: E402

WORLD = 2


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    workdir = tmp_path_factory.mktemp("gloo")
    store = workdir / "store"
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    if sys.platform.startswith("linux"):  # the loopback: no dependence on the host's network
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(rank),
                str(WORLD),
                str(store),
                str(workdir / f"rank{rank}.pt"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORLD)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=90))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"rank failed:\n{stderr[-3000:]}"
    return [torch.load(workdir / f"rank{rank}.pt") for rank in range(WORLD)]


def _single_process(name: str, pattern: str):
    """Loss and parameter gradients of the same computation in one process."""
    inputs, labels, model = shared_problem()
    loss_fn = losses()[name]
    embeddings = model(inputs)
    if pattern == "global":
        loss = loss_fn(embeddings, labels)
    else:  # the sum over ranks of their local-anchor losses
        loss = 0
        for rank in range(WORLD):
            start = sum(SIZES[:rank])
            rows = torch.arange(start, start + SIZES[rank])
            loss = loss + loss_fn(
                embeddings[rows], labels[rows], embeddings, labels, self_ref_index=rows
            )
    loss.backward()
    return loss.detach(), model.weight.grad, model.bias.grad


@pytest.mark.parametrize("name", ["triplet_hard", "triplet_all", "multi_similarity"])
def test_global_anchors_give_the_single_process_loss_and_gradient(rank_results, name):
    expected_loss, weight_grad, bias_grad = _single_process(name, "global")
    _, labels, _ = shared_problem()
    for rank, results in enumerate(rank_results):
        got = results[(name, "global")]
        assert torch.equal(got["gathered_labels"], labels)
        assert got["offset"] == sum(SIZES[:rank])
        torch.testing.assert_close(got["loss"], expected_loss, rtol=1e-12, atol=1e-12)
    # Each rank's rows get world_size times their gradient; DDP averages the ranks' parameter
    # gradients, which is the single-process gradient.
    mean_weight = sum(r[(name, "global")]["weight_grad"] for r in rank_results) / WORLD
    mean_bias = sum(r[(name, "global")]["bias_grad"] for r in rank_results) / WORLD
    torch.testing.assert_close(mean_weight, weight_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mean_bias, bias_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["triplet_hard", "triplet_all", "multi_similarity"])
def test_local_anchors_sum_to_the_single_process_sum(rank_results, name):
    expected_loss, weight_grad, bias_grad = _single_process(name, "local")
    total = sum(r[(name, "local")]["loss"] for r in rank_results)
    torch.testing.assert_close(total, expected_loss, rtol=1e-12, atol=1e-12)
    summed_weight = sum(r[(name, "local")]["weight_grad"] for r in rank_results)
    summed_bias = sum(r[(name, "local")]["bias_grad"] for r in rank_results)
    torch.testing.assert_close(summed_weight, weight_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(summed_bias, bias_grad, rtol=1e-10, atol=1e-12)


def test_without_a_process_group_the_batch_is_returned_unchanged():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    batch = gather_batch(x, torch.tensor([0, 1, 1]))
    assert batch.embeddings is x and batch.offset == 0
    assert batch.self_ref_index.tolist() == [0, 1, 2]

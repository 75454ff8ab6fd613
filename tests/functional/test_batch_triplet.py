"""The mined batch triplet loss against the brute-force reference, and its edge cases."""

from __future__ import annotations

import math
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.reference import reference_batch_triplet
from tripletkit.errors import NoTripletsWarning
from tripletkit.functional import MINING_MODES, batch_triplet_loss, triplet_kernels_numba
from tripletkit.functional import batch_triplet as batch_triplet_module
from tripletkit.functional.mining_modes import MINING_CODES

METRICS = ("squared_euclidean", "euclidean", "cosine", "dot")

# The reference tests run on a CUDA device too where there is one (CI has none).
DEVICES = (
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
)


def _backend_on(device: str, backend: str) -> str:
    """The numba kernels run on CPU tensors only; elsewhere every draw takes the torch kernels."""
    return backend if device == "cpu" else "torch"


def _assert_matches_reference(
    embeddings,
    labels,
    refs=None,
    ref_labels=None,
    self_ref_index=None,
    *,
    mining,
    distance,
    soft,
    margin,
    backend="auto",
    chunk_size=None,
    dense_max_positives=48,
    exact_ties=True,
    device="cpu",
):
    """Loss, gradients and statistics of the library equal the reference (float64).

    With ``exact_ties=False`` the gradients are compared summed over groups of identical rows:
    a GEMM may round the distances to two identical rows differently, so which of the two a tie
    picks is not defined there, while the gradient of the group is. ``device``: where the library
    computes (the reference always runs on the CPU).
    """
    x = embeddings.clone().requires_grad_()
    r = None if refs is None else refs.clone().requires_grad_()
    expected = reference_batch_triplet(
        x,
        labels,
        r,
        ref_labels,
        margin=margin,
        mining=mining,
        distance=distance,
        soft=soft,
        self_ref_index=self_ref_index,
    )
    inputs = [x] if r is None else [x, r]
    expected_grads = torch.autograd.grad(expected.loss, inputs, allow_unused=True)

    y = embeddings.clone().to(device).requires_grad_()
    s = None if refs is None else refs.clone().to(device).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoTripletsWarning)
        loss, stats = batch_triplet_loss(
            y,
            torch.tensor(labels, device=device),
            s,
            None if ref_labels is None else torch.tensor(ref_labels, device=device),
            margin=margin,
            mining=mining,
            distance=distance,
            soft=soft,
            self_ref_index=(
                None if self_ref_index is None else torch.tensor(self_ref_index, device=device)
            ),
            backend=backend,
            chunk_size=chunk_size,
            dense_max_positives=dense_max_positives,
            return_stats=True,
        )
    grads = torch.autograd.grad(loss, [y] if s is None else [y, s], allow_unused=True)
    assert loss.device == y.device
    loss = loss.cpu()
    grads = [None if g is None else g.cpu() for g in grads]

    torch.testing.assert_close(loss.detach(), expected.loss.detach(), rtol=1e-9, atol=1e-10)
    for source, got, want in zip([embeddings, refs], grads, expected_grads, strict=False):
        want = torch.zeros_like(y if got is None else got) if want is None else want
        got = torch.zeros_like(want) if got is None else got
        if not exact_ties:
            _, group = torch.unique(source, dim=0, return_inverse=True)
            got = torch.zeros_like(got).index_add_(0, group, got)
            want = torch.zeros_like(want).index_add_(0, group, want)
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-9)
    assert stats.num_valid_triplets == expected.num_valid
    assert stats.num_selected == expected.num_selected
    assert stats.num_active == expected.num_active
    considered = (
        expected.num_valid
        if mining in ("all", "semihard-window", "hard-window")
        else (expected.num_selected)
    )
    assert stats.active_triplet_fraction == (
        expected.num_active / considered if considered else 0.0
    )
    for got, want in [
        (stats.mean_positive_distance, expected.mean_pos),
        (stats.mean_negative_distance, expected.mean_neg),
        (stats.hardest_positive_distance, expected.hardest_pos),
        (stats.hardest_negative_distance, expected.hardest_neg),
    ]:
        if expected.num_valid:
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


# The selection modes' backward pass takes a sparse or a dense gradient by how many pairs were
# picked; small test batches would nearly always take the dense one, so both are forced here.
PICKS_GRADIENTS = ("sparse", "dense")


def picks_gradient(kind: str):
    fraction = math.inf if kind == "sparse" else 0.0
    return mock.patch.object(batch_triplet_module, "DENSE_PICKS_FRACTION", fraction)


# Integer-valued embeddings make every euclidean/dot distance exact in float64 in both the library's
# GEMM form and the reference's difference form, so ties (duplicated rows, equal distances, d_an
# exactly at d_ap + margin) are real ties in both and exercise the tie rules.
@st.composite
def integer_batches(draw, max_items=18):
    num_items = draw(st.integers(1, max_items))
    dim = draw(st.integers(1, 3))
    num_classes = draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=num_items, max_size=num_items))
    values = draw(st.lists(st.integers(-2, 2), min_size=num_items * dim, max_size=num_items * dim))
    embeddings = torch.tensor(values, dtype=torch.float64).reshape(num_items, dim)
    return embeddings, labels


# Continuous embeddings for cosine (whose normalisation rounds differently in the two forms), with
# some rows duplicated exactly within their class. A duplicate in another class would put a negative
# exactly at a positive's distance, a tie that a GEMM may break by one ulp either way: whether such a
# triplet counts as active is then a property of the rounding, not of the library (the integer-grid
# tests cover those ties exactly).
@st.composite
def continuous_batches(draw, max_items=18):
    num_items = draw(st.integers(1, max_items))
    dim = draw(st.integers(2, 4))
    num_classes = draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=num_items, max_size=num_items))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    copies = draw(st.lists(st.tuples(st.integers(0, num_items - 1), st.integers(0, num_items - 1))))
    for target, source in copies:
        embeddings[target] = embeddings[source]
        labels[target] = labels[source]
    return embeddings, labels


@given(
    batch=integer_batches(),
    mining=st.sampled_from(MINING_MODES),
    distance=st.sampled_from(("squared_euclidean", "euclidean", "dot")),
    soft=st.booleans(),
    margin=st.sampled_from((0.0, 0.5, 1.0, 2.0)),
    backend=st.sampled_from(("numba", "torch")),
    chunk_size=st.sampled_from((None, 1, 4)),
    dense_max=st.sampled_from((0, 48)),
    picks_grad=st.sampled_from(PICKS_GRADIENTS),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_on_integer_grids(
    device, batch, mining, distance, soft, margin, backend, chunk_size, dense_max, picks_grad
):
    embeddings, labels = batch
    with picks_gradient(picks_grad):
        _assert_matches_reference(
            embeddings,
            labels,
            mining=mining,
            distance=distance,
            soft=soft,
            margin=margin,
            backend=_backend_on(device, backend),
            chunk_size=chunk_size,
            dense_max_positives=dense_max,
            device=device,
        )


@given(
    batch=continuous_batches(),
    mining=st.sampled_from(MINING_MODES),
    soft=st.booleans(),
    margin=st.sampled_from((0.0, 0.2, 1.0)),
    backend=st.sampled_from(("numba", "torch")),
    chunk_size=st.sampled_from((None, 3)),
    dense_max=st.sampled_from((0, 48)),
    picks_grad=st.sampled_from(PICKS_GRADIENTS),
)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_with_cosine(
    device, batch, mining, soft, margin, backend, chunk_size, dense_max, picks_grad
):
    embeddings, labels = batch
    with picks_gradient(picks_grad):
        _assert_matches_reference(
            embeddings,
            labels,
            mining=mining,
            distance="cosine",
            soft=soft,
            margin=margin,
            backend=_backend_on(device, backend),
            chunk_size=chunk_size,
            dense_max_positives=dense_max,
            exact_ties=False,
            device=device,
        )


@given(
    batch=integer_batches(max_items=10),
    memory=integer_batches(max_items=14),
    mining=st.sampled_from(MINING_MODES),
    distance=st.sampled_from(("squared_euclidean", "dot")),
    soft=st.booleans(),
    backend=st.sampled_from(("numba", "torch")),
    with_self=st.booleans(),
)
def test_matches_reference_against_a_reference_set(
    batch, memory, mining, distance, soft, backend, with_self
):
    """Anchors mined against another set; optionally the set holds the anchors' own copies (XBM)."""
    embeddings, labels = batch
    memory_embeddings, memory_labels = memory
    if memory_embeddings.shape[1] != embeddings.shape[1]:
        memory_embeddings = torch.zeros(len(memory_labels), embeddings.shape[1]).double()
        memory_embeddings[:, 0] = torch.arange(len(memory_labels)).double() % 3
    refs = torch.cat([memory_embeddings, embeddings])
    ref_labels = memory_labels + labels
    self_index = None
    if with_self:
        self_index = [len(memory_labels) + i for i in range(len(labels))]
    _assert_matches_reference(
        embeddings,
        labels,
        refs,
        ref_labels,
        self_index,
        mining=mining,
        distance=distance,
        soft=soft,
        margin=1.0,
        backend=backend,
    )


@pytest.mark.parametrize("mining", MINING_MODES)
def test_dense_strategy_for_picks_matches_reference(mining, monkeypatch):
    """Selection modes whose picks exceed the budget take the dense per-chunk path: same results."""
    monkeypatch.setattr(batch_triplet_module, "PICKS_BUDGET", 0)
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=generator).tolist()
    for chunk_size in (None, 7):
        _assert_matches_reference(
            embeddings,
            labels,
            mining=mining,
            distance="euclidean",
            soft=False,
            margin=0.3,
            chunk_size=chunk_size,
        )


@pytest.mark.parametrize("mining", ["all", "semihard-window", "hard"])
def test_each_chunk_is_measured_and_mined_once(mining, monkeypatch):
    """The chunk's gradient is applied in the forward pass: backward neither recomputes the
    distances nor mines again, and the result still equals the reference, also when the loss is
    scaled and summed with another term before backward."""
    monkeypatch.setattr(batch_triplet_module, "PICKS_BUDGET", 0)
    calls = {"distances": 0, "mine": 0}
    plan_class = batch_triplet_module._Plan
    original_distances, original_mine = plan_class.distances, plan_class.mine

    def counting_distances(self, *args):
        calls["distances"] += 1
        return original_distances(self, *args)

    def counting_mine(self, *args):
        calls["mine"] += 1
        return original_mine(self, *args)

    monkeypatch.setattr(plan_class, "distances", counting_distances)
    monkeypatch.setattr(plan_class, "mine", counting_mine)
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.randn(23, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (23,), generator=generator)
    x = embeddings.clone().requires_grad_()
    loss = batch_triplet_loss(x, labels, margin=0.5, mining=mining, chunk_size=5)
    (3.0 * loss + x.sum()).backward()
    assert calls == {"distances": 5, "mine": 5}

    reference = embeddings.clone().requires_grad_()
    expected = reference_batch_triplet(
        reference,
        labels.tolist(),
        margin=0.5,
        mining=mining,
        distance="squared_euclidean",
        soft=False,
    ).loss
    (3.0 * expected + reference.sum()).backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, reference.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_no_gradient_work_without_grad(mining, monkeypatch):
    """Under ``torch.no_grad`` (or with inputs that need no gradient) the kernels are asked for
    statistics only: the same loss, no gradient computed."""
    monkeypatch.setattr(batch_triplet_module, "PICKS_BUDGET", 0)
    asked = []
    original = batch_triplet_module._Plan.mine

    def recording_mine(self, dist, start, stop, table, want_grad, grad_out=None):
        asked.append(want_grad)
        return original(self, dist, start, stop, table, want_grad, grad_out)

    monkeypatch.setattr(batch_triplet_module._Plan, "mine", recording_mine)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(20, 3, generator=generator, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 3, (20,), generator=generator)
    with_grad = batch_triplet_loss(x, labels, mining=mining, chunk_size=8)
    assert asked == [True] * 3
    asked.clear()
    with torch.no_grad():
        without = batch_triplet_loss(x, labels, mining=mining, chunk_size=8)
    plain = batch_triplet_loss(x.detach(), labels, mining=mining, chunk_size=8)
    assert asked == [False] * 6
    assert float(without) == float(with_grad.detach()) == float(plain)
    assert not without.requires_grad and not plain.requires_grad


def test_hand_checked_batch_hard():
    # Squared distances: anchor 0 → pos 1.0, negs {1.0, 1.01}; anchor 1 → pos 1.0, negs {2.0, 1.81};
    # anchor 2 → pos 0.01, negs {1.0, 2.0}; anchor 3 → pos 0.01, negs {1.01, 1.81}.
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    loss = batch_triplet_loss(embeddings, labels, margin=1.0, mining="hard")
    expected = ((1.0 - 1.0 + 1) + (1.0 - 1.81 + 1) + (0.01 - 1.0 + 1) + 0.0) / 4
    assert float(loss) == pytest.approx(expected, abs=1e-12)


def test_hand_checked_one_dimensional_modes():
    # Points on a line; class 0 at 0 and 1, class 1 at 1.5 and 4. Squared distances from anchor 0:
    # positive 1 (point 1), negatives 2.25 and 16. Margin 2.
    embeddings = torch.tensor([[0.0], [1.0], [1.5], [4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    # Every triplet (a, p, n), d_ap - d_an + 2:
    #   a=0: (1 - 2.25 + 2) = 0.75, (1 - 16 + 2) < 0
    #   a=1: p=0: (1 - 0.25 + 2) = 2.75, (1 - 9 + 2) < 0
    #   a=2: p=3: (6.25 - 2.25 + 2) = 6, (6.25 - 0.25 + 2) = 8
    #   a=3: p=2: (6.25 - 16 + 2) < 0, (6.25 - 9 + 2) < 0
    assert float(batch_triplet_loss(embeddings, labels, margin=2.0, mining="all")) == pytest.approx(
        (0.75 + 2.75 + 6 + 8) / 4
    )
    # semihard-window: d_ap < d_an < d_ap + 2 → a=0: 1 < 2.25 < 3 ✓ (0.75); a=1: 1 < 9? 9 < 3 no;
    # a=2: d_an in (6.25, 8.25)? 2.25, 0.25 no; a=3: 6.25 < 9 < 8.25? no; 6.25 < 16 no.
    assert float(
        batch_triplet_loss(embeddings, labels, margin=2.0, mining="semihard-window")
    ) == pytest.approx(0.75)
    # hard-window: d_an <= d_ap → a=1 with negative 1.5 (0.25 <= 1): 2.75; a=2 with both negatives
    # (2.25 and 0.25 <= 6.25): 6 and 8.
    assert float(
        batch_triplet_loss(embeddings, labels, margin=2.0, mining="hard-window")
    ) == pytest.approx((2.75 + 6 + 8) / 3)
    # semihard: per positive pair, the closest negative farther than the positive, else farthest:
    #   (0,1): d_ap 1 → 2.25 → 0.75;  (1,0): d_ap 1 → 9 → 0;  (2,3): d_ap 6.25 → none farther →
    #   farthest 2.25 → 6;  (3,2): d_ap 6.25 → 9 → 0.  Mean over 4 pairs.
    assert float(
        batch_triplet_loss(embeddings, labels, margin=2.0, mining="semihard")
    ) == pytest.approx((0.75 + 0 + 6 + 0) / 4)
    # easy-positive equals hard here (one positive each): closest negative 2.25, 0.25, 0.25, 9.
    hard = batch_triplet_loss(embeddings, labels, margin=2.0, mining="hard")
    easy = batch_triplet_loss(embeddings, labels, margin=2.0, mining="easy-positive")
    assert float(hard) == pytest.approx(float(easy))
    assert float(hard) == pytest.approx((0.75 + 2.75 + 8 + 0) / 4)


@pytest.mark.parametrize("mining", MINING_MODES)
@pytest.mark.parametrize("distance", METRICS)
@pytest.mark.parametrize("soft", [False, True])
def test_gradcheck(mining, distance, soft):
    generator = torch.Generator().manual_seed(7)
    embeddings = torch.randn(9, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])

    def loss(x):
        return batch_triplet_loss(
            x, labels, margin=0.3, mining=mining, distance=distance, soft=soft
        )

    assert torch.autograd.gradcheck(loss, (embeddings,), eps=1e-6, atol=1e-6)


def test_gradcheck_with_reference_set_and_chunks():
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    r = torch.randn(8, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels, ref_labels = torch.tensor([0, 1, 1, 2, 0, 1]), torch.tensor([0, 0, 1, 2, 2, 1, 0, 3])
    for mining in MINING_MODES:

        def loss(x, r, mining=mining):
            return batch_triplet_loss(
                x, labels, r, ref_labels, margin=0.5, mining=mining, chunk_size=2
            )

        assert torch.autograd.gradcheck(loss, (x, r), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "labels",
    [
        [3, 3, 3, 3],  # a single class: no negative
        [0, 1, 2, 3],  # all distinct: no positive pair
        [5],  # one item
    ],
    ids=["single-class", "all-distinct", "one-item"],
)
@pytest.mark.parametrize("mining", MINING_MODES)
def test_no_valid_triplet_gives_connected_zero_and_one_warning(labels, mining):
    embeddings = torch.randn(len(labels), 4, requires_grad=True)
    with pytest.warns(NoTripletsWarning) as record:
        loss, stats = batch_triplet_loss(
            embeddings, torch.tensor(labels), mining=mining, return_stats=True
        )
    assert len(record) == 1
    assert float(loss.detach()) == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))
    assert stats.num_valid_triplets == 0


def test_valid_triplets_but_none_active_is_zero_without_warning():
    embeddings = torch.tensor([[0.0], [0.1], [10.0], [10.1]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, stats = batch_triplet_loss(embeddings, labels, margin=0.2, return_stats=True)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert stats.num_valid_triplets == 8 and stats.num_active == 0
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mining", MINING_MODES)
def test_half_precision_inputs_compute_in_float32(dtype, mining):
    generator = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=1)
    labels = torch.arange(10).repeat_interleave(4)
    half = base.to(dtype).requires_grad_()
    loss = batch_triplet_loss(half, labels, mining=mining)
    loss.backward()
    assert loss.dtype == torch.float32
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()
    full = batch_triplet_loss(half.detach().float(), labels, mining=mining)
    torch.testing.assert_close(loss.detach(), full, rtol=1e-5, atol=1e-6)


def test_larger_batch_agrees_across_backends_and_chunking():
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.nn.functional.normalize(torch.randn(300, 16, generator=generator), dim=1)
    labels = torch.randint(0, 30, (300,), generator=generator)
    for mining in MINING_MODES:
        results = []
        for backend, chunk_size in [("numba", None), ("numba", 37), ("torch", None), ("torch", 64)]:
            x = embeddings.double().clone().requires_grad_()
            loss = batch_triplet_loss(
                x, labels, mining=mining, backend=backend, chunk_size=chunk_size
            )
            loss.backward()
            results.append((loss.detach(), x.grad))
        for loss, grad in results[1:]:
            torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad, results[0][1], rtol=1e-10, atol=1e-12)


def test_custom_distance_function_uses_autograd_and_matches_named_metric():
    from tripletkit.distances import pairwise_distances

    generator = torch.Generator().manual_seed(2)
    embeddings = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (20,), generator=generator)
    for mining in MINING_MODES:
        a = embeddings.clone().requires_grad_()
        b = embeddings.clone().requires_grad_()
        named = batch_triplet_loss(a, labels, mining=mining, distance="euclidean")
        custom = batch_triplet_loss(
            b, labels, mining=mining, distance=lambda x, y: pairwise_distances(x, y, "euclidean")
        )
        named.backward()
        custom.backward()
        torch.testing.assert_close(named, custom)
        torch.testing.assert_close(a.grad, b.grad)


class TestValidation:
    def test_overflowing_distances_are_a_clear_error_not_nan(self):
        embeddings = torch.tensor([[0.0], [1e20], [3e20], [-1e20]])
        with pytest.raises(ValueError, match="overflowed to Inf/NaN"):
            batch_triplet_loss(embeddings, torch.tensor([0, 0, 1, 1]))

    def test_labels_of_wrong_shape(self):
        with pytest.raises(ValueError, match=r"labels has shape \(32, 1\); expected a 1-D tensor"):
            batch_triplet_loss(torch.randn(32, 4), torch.zeros(32, 1, dtype=torch.long))

    def test_float_labels(self):
        with pytest.raises(ValueError, match="expected integer class labels"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def test_mismatched_batch_sizes(self):
        with pytest.raises(ValueError, match="expected a 1-D tensor of 5 integer labels"):
            batch_triplet_loss(torch.randn(5, 2), torch.tensor([0, 1, 0]))

    def test_nan_rows_are_counted(self):
        x = torch.randn(6, 3)
        x[1, 0] = float("nan")
        x[4, 2] = float("inf")
        with pytest.raises(ValueError, match=r"2 of 6 rows containing NaN or Inf \(rows 1, 4\)"):
            batch_triplet_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]))

    def test_unknown_mode_lists_accepted(self):
        with pytest.raises(ValueError, match="unknown mining 'hardest'; accepted: 'all', 'hard'"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), mining="hardest")

    def test_unknown_distance_lists_accepted(self):
        with pytest.raises(
            ValueError, match="unknown distance 'l1'; accepted: 'squared_euclidean'"
        ):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), distance="l1")

    def test_reference_set_needs_labels(self):
        with pytest.raises(ValueError, match="must be given together"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), torch.randn(3, 2))

    def test_reference_set_dimension(self):
        with pytest.raises(ValueError, match="dimension 2 but ref_embeddings has dimension 3"):
            batch_triplet_loss(
                torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), torch.randn(3, 3), [0, 1, 1]
            )

    def test_negative_margin(self):
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), margin=-0.1)

    def test_bad_chunk_size(self):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), chunk_size=0)

    def test_integer_embeddings(self):
        with pytest.raises(ValueError, match="expected a floating dtype"):
            batch_triplet_loss(torch.ones(4, 2, dtype=torch.long), torch.tensor([0, 0, 1, 1]))

    def test_numba_backend_refuses_non_cpu_requests(self):
        with pytest.raises(ValueError, match="unknown backend 'cuda'"):
            batch_triplet_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), backend="cuda")


def _float32_neighbours(value: float, steps: int = 3) -> set[float]:
    """Float32 values within ``steps`` ulps of ``value`` rounded to float32."""
    centre = np.float32(value)
    found = {float(centre)}
    for direction in (np.float32(-np.inf), np.float32(np.inf)):
        current = centre
        for _ in range(steps):
            current = np.nextafter(current, direction)
            found.add(float(current))
    return found


@given(
    d_ap=st.floats(-8.0, 8.0, allow_nan=False),
    margin=st.sampled_from((0.0, 1e-9, 0.1, 0.2, 0.3, 0.7, 1.0)),
    mining=st.sampled_from(("all", "semihard-window", "hard-window")),
)
def test_float32_selection_bounds_select_what_float64_selects(d_ap, margin, mining):
    """The range kernels compare float32 distances in float32 against bounds rounded outward:
    exactly the negatives that the float64 thresholds select, at every float32 value near them."""
    positives = np.array([d_ap])
    thresholds = positives + margin
    low, high = triplet_kernels_numba._selection_bounds(
        positives, thresholds, MINING_CODES[mining], np.zeros(1, np.float32)
    )
    assert low.dtype == high.dtype == np.float32
    candidates = _float32_neighbours(d_ap) | _float32_neighbours(thresholds[0])
    for value in sorted(candidates):
        if mining == "all":
            wanted = value < thresholds[0]
        elif mining == "semihard-window":
            wanted = d_ap < value < thresholds[0]
        else:
            wanted = value <= d_ap
        got = bool(low[0] < np.float32(value) < high[0])
        assert got == wanted, (value, float(low[0]), float(high[0]))


@given(
    batch=integer_batches(),
    mining=st.sampled_from(("all", "semihard-window", "hard-window", "semihard")),
    distance=st.sampled_from(("squared_euclidean", "dot")),
    margin=st.sampled_from((0.0, 0.3, 0.7, 1.0)),
)
def test_float32_counting_modes_match_the_float64_reference(batch, mining, distance, margin):
    """Small integer coordinates give exact float32 distances: the modes that count in float32
    select the same triplets as in float64, and loss and gradients agree to float32 precision."""
    embeddings, labels = batch
    x = embeddings.clone().requires_grad_()
    expected = reference_batch_triplet(
        x, labels, margin=margin, mining=mining, distance=distance, soft=False
    )
    (expected_grad,) = torch.autograd.grad(expected.loss, [x], allow_unused=True)
    y = embeddings.float().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoTripletsWarning)
        loss, stats = batch_triplet_loss(
            y,
            torch.tensor(labels),
            margin=margin,
            mining=mining,
            distance=distance,
            backend="numba",
            return_stats=True,
        )
    (grad,) = torch.autograd.grad(loss, [y], allow_unused=True)
    assert stats.num_selected == expected.num_selected
    assert stats.num_active == expected.num_active
    torch.testing.assert_close(loss.double(), expected.loss.detach(), rtol=1e-6, atol=1e-6)
    want = torch.zeros_like(x) if expected_grad is None else expected_grad
    got = torch.zeros_like(y) if grad is None else grad
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_refs", [1, 100, 1024, 2048, 4096, 16384, 65536, 2**20, 2**26])
def test_default_chunks_are_cpu_tiles_within_the_memory_budget(num_refs):
    cpu = batch_triplet_module._default_chunk_size(num_refs, torch.device("cpu"))
    other = batch_triplet_module._default_chunk_size(num_refs, torch.device("meta"))
    budget = batch_triplet_module.DEFAULT_CHUNK_ELEMENTS
    for rows in (cpu, other):
        assert rows >= 1
        assert rows * num_refs <= max(budget, num_refs)  # one row may exceed a tiny budget
    if num_refs >= 2048:  # CPU tiles: no num_refs x num_refs matrix at once
        assert cpu < num_refs

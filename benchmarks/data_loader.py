"""Is the data loader ever the bottleneck? Loader samples/s beside training samples/s, 2 cores.

Data: the standard Fashion-MNIST training side (train images of classes 0-4, 30,000 × 28×28
uint8), batches of P=5 classes × K=32 = 160 from :class:`tripletkit.data.PKSampler`, turned into
normalised float tensors, with and without augmentation (random resized crop + flip), with 0 and
2 DataLoader workers, collated as the trainer collates them
(:func:`tripletkit.data.collate_items`). ``per-item`` rows disable the batched fetch
(``__getitems__``) to show what it buys.

Training: the demo model (3 conv blocks of 32/64/128 channels with BatchNorm, a 64-d
L2-normalised embedding) on 28×28 grayscale, batch 160, :class:`tripletkit.losses.BatchTripletLoss`
(batch-hard), Adam: forward + backward + step samples/s. ``train fed by loader`` rows alternate a
fixed-batch step with a loader-fed step in one process and report the ratio of their times: the
cost of data loading as a run sees it, robust to other jobs on the machine.

Each configuration runs in its own process (``benchmarks/harness.py``). Run:
``.venv/bin/python benchmarks/data_loader.py`` (about 10 minutes). Writes
``benchmarks/results/data_loader.json`` and ``benchmarks/results/data_loader.md``.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS_DIR, Measurement, machine_info, markdown_table, measure, save_results

BATCHES_PER_STEP = 25
TRAIN_STEPS_PER_STEP = 5
ROUNDS = 3
P, K = 5, 32
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


def _transform(augment: bool, batched: bool):
    from tripletkit.data import transforms as T

    parts = [T.ToFloat(), T.Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)]
    if augment:
        parts = [T.RandomResizedCrop(28, scale=(0.7, 1.0)), T.RandomHorizontalFlip(), *parts]
    transform = T.Compose(parts)
    if batched:
        return transform
    # A plain function is not known to accept batches, so the dataset fetches item by item.
    return _PerItem(transform)


class _PerItem:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x):
        return self.transform(x)


def _loader(augment: bool, workers: int, batched: bool = True):
    import torch

    from tripletkit.data import (
        ImageArrayDataset,
        PKSampler,
        collate_items,
        fashion_mnist_retrieval_split,
    )

    split = fashion_mnist_retrieval_split()
    dataset = ImageArrayDataset(
        split.train.images, split.train.labels, _transform(augment, batched), seed=0
    )
    sampler = PKSampler(dataset.labels, p=P, k=K, seed=0)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        # The trainer's collation: a batched fetch reaches the model as fetched, not re-stacked.
        collate_fn=collate_items,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def _forever(loader):
    while True:
        yield from loader


def loader_step(augment: bool, workers: int, batched: bool = True):
    """Draw ``BATCHES_PER_STEP`` batches of 160 normalised images."""
    batches = _forever(_loader(augment, workers, batched))

    def step():
        for _ in range(BATCHES_PER_STEP):
            images, _ = next(batches)
        assert images.shape == (P * K, 1, 28, 28)

    return step


def demo_model():
    """The demo model: 3 conv blocks (32/64/128, BatchNorm) -> 64-d L2-normalised embedding."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))
            self.head = nn.Linear(128, 64)

        def forward(self, x):
            x = self.features(x).mean(dim=(2, 3))
            return nn.functional.normalize(self.head(x), dim=1)

    torch.manual_seed(0)
    return Embedder()


def _train_step_fn():
    import torch

    from tripletkit.losses import BatchTripletLoss

    model = demo_model().train()
    loss_fn = BatchTripletLoss(margin=0.2, mining="hard")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_on(images, labels):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return train_on


def train_step():
    """``TRAIN_STEPS_PER_STEP`` training steps on a fixed batch of 160 (no data loading)."""
    import torch

    train_on = _train_step_fn()
    images = torch.randn(P * K, 1, 28, 28)
    labels = torch.arange(P).repeat_interleave(K)

    def step():
        for _ in range(TRAIN_STEPS_PER_STEP):
            loss = train_on(images, labels)
        assert torch.isfinite(loss)

    return step


def loader_overhead(augment: bool, workers: int):
    """Training steps fed by the loader, interleaved with fixed-batch steps in the same process.

    Other jobs on the machine slow both kinds of step alike, so the ratio of their medians is the
    cost of data loading as a run sees it (1.00 = free), even when absolute rates are noisy.
    """
    import statistics
    import time

    import torch

    train_on = _train_step_fn()
    batches = _forever(_loader(augment, workers))
    fixed_images, fixed_labels = next(batches)
    fixed_images = fixed_images.clone()
    fed_times: list[float] = []
    fixed_times: list[float] = []

    def step():
        for _ in range(TRAIN_STEPS_PER_STEP):
            start = time.perf_counter()
            train_on(fixed_images, fixed_labels)
            middle = time.perf_counter()
            images, labels = next(batches)
            loss = train_on(images, labels)
            fixed_times.append(middle - start)
            fed_times.append(time.perf_counter() - middle)
        assert torch.isfinite(loss)

    def extra():
        fed, fixed = statistics.median(fed_times), statistics.median(fixed_times)
        return {
            "fed_step_s": fed,
            "fixed_step_s": fixed,
            "fed_over_fixed": fed / fixed,
            "fed_samples_per_s": P * K / fed,
        }

    step.extra = extra
    return step


CONFIGS = [
    ("loader, plain, 0 workers", "data_loader:loader_step", {"augment": False, "workers": 0}),
    ("loader, plain, 2 workers", "data_loader:loader_step", {"augment": False, "workers": 2}),
    ("loader, augmented, 0 workers", "data_loader:loader_step", {"augment": True, "workers": 0}),
    ("loader, augmented, 2 workers", "data_loader:loader_step", {"augment": True, "workers": 2}),
    (
        "loader, augmented, 0 workers, per-item",
        "data_loader:loader_step",
        {"augment": True, "workers": 0, "batched": False},
    ),
    ("train step (fixed batch)", "data_loader:train_step", {}),
    (
        "train fed by loader, plain, 0 workers",
        "data_loader:loader_overhead",
        {"augment": False, "workers": 0},
    ),
    (
        "train fed by loader, augmented, 0 workers",
        "data_loader:loader_overhead",
        {"augment": True, "workers": 0},
    ),
    (
        "train fed by loader, augmented, 2 workers",
        "data_loader:loader_overhead",
        {"augment": True, "workers": 2},
    ),
]

SAMPLES = {
    "data_loader:loader_step": BATCHES_PER_STEP * P * K,
    "data_loader:train_step": TRAIN_STEPS_PER_STEP * P * K,
    # One step = TRAIN_STEPS_PER_STEP fixed-batch steps + as many loader-fed steps.
    "data_loader:loader_overhead": 2 * TRAIN_STEPS_PER_STEP * P * K,
}


def rate(m: Measurement) -> float | None:
    return SAMPLES[m.config["_target"]] / m.median_s if m.status == "ok" else None


def _overhead_row(name: str, rounds: list[Measurement]) -> list[str]:
    done = [m for m in rounds if m.status == "ok"]
    if not done:
        return [name, rounds[-1].status, "-", "-"]
    ratios = sorted(m.detail["fed_over_fixed"] for m in done)
    fed = max(m.detail["fed_samples_per_s"] for m in done)
    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if len(ratios) > 1 else "-"
    return [name, f"{statistics.median(ratios):.2f}", spread, f"{fed:,.0f}"]


def main() -> None:
    from tripletkit.data import fashion_mnist_available
    from tripletkit.data.bundled import FASHION_MNIST_INSTALL

    if not fashion_mnist_available():
        raise SystemExit(f"Fashion-MNIST is not installed: {FASHION_MNIST_INSTALL}")
    # Other jobs share the two cores, so every configuration runs in ROUNDS interleaved rounds:
    # rates report the best round (the least disturbed one), loading overheads the median ratio.
    # Every round is kept in the JSON.
    load_at_start = os.getloadavg()[0]
    results: list[Measurement] = []
    by_name: dict[str, list[Measurement]] = {name: [] for name, _, _ in CONFIGS}
    for round_number in range(ROUNDS):
        for name, target, config in CONFIGS:
            m = measure(name, target, config, repeats=5, min_time_s=3.0, timeout_s=300)
            m.config = {**config, "_target": target, "_round": round_number}
            results.append(m)
            by_name[name].append(m)
            shown = f"{rate(m):,.0f} samples/s" if m.status == "ok" else f"{m.status} {m.detail}"
            if m.status == "ok" and isinstance(m.detail, dict):
                shown += f", loader-fed / fixed step {m.detail['fed_over_fixed']:.2f}"
            print(f"round {round_number}: {name:42s} {shown}", flush=True)

    def best_rate(name: str) -> float | None:
        rates = [r for r in (rate(m) for m in by_name[name]) if r]
        return max(rates) if rates else None

    train_rate = best_rate("train step (fixed batch)")
    rate_rows, overhead_rows = [], []
    for name, target, _ in CONFIGS:
        if target == "data_loader:loader_overhead":
            overhead_rows.append(_overhead_row(name, by_name[name]))
            continue
        r = best_rate(name)
        ratio = f"{r / train_rate:.1f}×" if r and train_rate else "-"
        rate_rows.append([name, f"{r:,.0f}" if r else by_name[name][-1].status, ratio])
    info = machine_info()
    summary = "\n".join(
        [
            "### Data loading vs training speed (Fashion-MNIST, batch 160 = P 5 × K 32, 2 cores)",
            "",
            markdown_table(rate_rows, ["configuration", "samples/s", "÷ training rate"]),
            "",
            markdown_table(
                overhead_rows,
                [
                    "training fed by the loader",
                    "step time ÷ fixed-batch step (median)",
                    "range over rounds",
                    "samples/s (best)",
                ],
            ),
            "",
            "Loader rows: uint8 images -> normalised float batches from `PKSampler` + "
            "`ImageArrayDataset` (augmented: random resized crop, scale 0.7-1.0, + horizontal flip; "
            "per-item: the same without the batched fetch). Training: the demo CNN (3 conv blocks "
            "32/64/128 + BatchNorm, 64-d L2-normalised) with `BatchTripletLoss` (batch-hard), "
            "forward + backward + Adam step. The second table alternates a fixed-batch step and a "
            "loader-fed step in one process, so both see the same machine load; 1.00 means data "
            "loading costs nothing. "
            f"Measured on {info['cpus']} CPU cores shared with other jobs (load average "
            f"{load_at_start:.1f} at the start, {info['load_average'][0]:.1f} at the end), torch "
            f"{info['torch']} with {info['torch_threads']} threads, {info['date']}; "
            f"{ROUNDS} interleaved rounds, rates are the best round.",
        ]
    )
    save_results(
        "data_loader",
        results,
        {
            "summary_markdown": summary,
            "train_samples_per_s": train_rate,
            "best_samples_per_s": {name: best_rate(name) for name, _, _ in CONFIGS},
            "load_average_at_start": load_at_start,
        },
    )
    (RESULTS_DIR / "data_loader.md").write_text(summary + "\n")
    print()
    print(summary)


if __name__ == "__main__":
    main()

"""The Trainer: P×K batches, any tripletkit loss, AdamW with warm-up + cosine, validation, early
stopping, atomic checkpoints and exact resume.

Exactness of resume: every source of randomness is either a function of ``(seed, epoch, batch)``
(the P×K sampler, the datasets' augmentation) or saved in the checkpoint (torch, numpy and Python
RNG states), and the learning rate is a pure function of the step. Checkpoints are written at
optimizer-step boundaries with the position in the epoch, so a run killed at any instant and resumed
from its last checkpoint replays exactly the batches it had not finished and ends with the same
weights as an uninterrupted run.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised (gloo on
CPU, NCCL on GPU), the sampler gives each rank disjoint batches, the model is wrapped in
DistributedDataParallel, and, for batch losses, each rank mines its anchors against the embeddings
gathered from every rank. Rank 0 alone logs, validates and writes checkpoints.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tripletkit.data import PKSampler, collate_items
from tripletkit.models.embedding import uses_projector
from tripletkit.training.allocator import keep_freed_memory
from tripletkit.training.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    load_optimizer_state,
    pack,
    save_checkpoint,
    unpack,
)
from tripletkit.training.config import RunConfig
from tripletkit.training.diagnostics import CollapseDetector
from tripletkit.training.precision import FP16_REFUSED_DEVICES, autocast, resolve_precision
from tripletkit.training.run_log import RunLog
from tripletkit.training.schedule import lr_factor

__all__ = ["TrainData", "TrainResult", "Trainer"]

Evaluate = Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]

_DISTANCE_SCALE = {"squared_euclidean": 2.0, "euclidean": 1.0, "cosine": 1.0, "dot": 1.0}


@dataclass
class TrainData:
    """The data of a run.

    Attributes:
        train: dataset of ``(input, label)``; must expose ``labels`` (``(N,)`` ints) and may
            expose ``set_epoch(epoch)`` (seeded augmentation) and ``num_skipped``.
        validation: dataset of ``(input, label)`` over classes held out from training, or None.
        collate: DataLoader ``collate_fn`` (None: :func:`~tripletkit.data.collate_items`, torch's
            default collation with a fast path for the batches of the in-memory datasets).
        summary: what the data is (name, items, classes, skipped files), for the report.
    """

    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset | None = None
    collate: Callable | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    before: dict[str, Any]
    after: dict[str, Any]
    best_epoch: int | None
    history: list[dict[str, Any]]
    stopped_early: bool
    diagnoses: list[str]
    #: what the run trained in: train.precision, with "auto" resolved (:func:`resolve_precision`)
    precision: str = "fp32"


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    py_version, py_state, py_gauss = random.getstate()
    # numpy's legacy global generator is saved because user code (augmentations) may draw from it.
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    return tensors, {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, pos, has_gauss, cached = state["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator user code may use
    torch.manual_seed(seed)


class _SkipBatches(torch.utils.data.Sampler):
    """The batches of ``sampler``'s current epoch from position ``start`` on (for resuming)."""

    def __init__(self, batches: list[list[int]], start: int) -> None:
        self.batches = batches[start:]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` (foreach), bit for bit, without its multiply by a
    scale of exactly 1 when the norm is already below ``max_norm`` (most steps) on CPU, where
    reading the norm costs no device synchronisation. Returns the total norm.

    >>> w = torch.zeros(2, requires_grad=True)
    >>> w.grad = torch.tensor([3.0, 4.0])
    >>> float(clip_gradients([w], 1.0)), [round(g, 4) for g in w.grad.tolist()]
    (5.0, [0.6, 0.8])
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    total = nn.utils.get_total_norm(grads, foreach=True)
    if grads and grads[0].device.type == "cpu" and bool(max_norm / (total + 1e-6) >= 1):
        return total  # torch would multiply by min(max_norm / (norm + 1e-6), 1) = 1
    nn.utils.clip_grads_with_norm_(parameters, max_norm, total, foreach=True)
    return total


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Train an embedding model with a tripletkit loss on P×K batches.

    Args:
        model: maps a batch of inputs to ``(B, D)`` embeddings; an
            :class:`~tripletkit.models.EmbeddingModel` also gets saved with its config.
        loss_fn: a tripletkit loss module called as ``loss_fn(embeddings, labels)`` (its
            parameters, e.g. proxies, get ``optim.loss_lr_multiplier`` × the learning rate), or
            one that also takes ``ref_embeddings, ref_labels`` for mining across processes.
        data: the :class:`TrainData`.
        config: the resolved :class:`~tripletkit.training.config.RunConfig`.
        run_dir: where checkpoints, ``metrics.jsonl``, ``config.json`` and the model go.
        evaluate: ``(embeddings, labels) -> metrics dict`` used for validation (default:
            :func:`tripletkit.evaluation.retrieval_metrics`).

    Example:
        >>> import tempfile, torch
        >>> from tripletkit.losses import BatchTripletLoss
        >>> from tripletkit.training import RunConfig, TrainData, Trainer, resolve_config
        >>> from tripletkit.data import FeatureDataset
        >>> x = torch.randn(64, 8); y = torch.arange(8).repeat_interleave(8)
        >>> config = resolve_config(overrides={"data.p": 4, "data.k": 4, "train.epochs": 1,
        ...                                    "train.quiet": True, "train.report": False})
        >>> data = TrainData(FeatureDataset(x[:32], y[:32]), FeatureDataset(x[32:], y[32:]))
        >>> trainer = Trainer(torch.nn.Linear(8, 4), BatchTripletLoss(), data, config,
        ...                   run_dir=tempfile.mkdtemp())
        >>> result = trainer.fit()
        >>> {"map_at_r", "precision_at_1", "r_precision"} <= set(result.after)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        data: TrainData,
        config: RunConfig,
        run_dir: str | Path,
        evaluate: Evaluate | None = None,
    ) -> None:
        self.model = model
        self._owns_process_group = False  # set when fit() opens the torch.distributed group
        self._run_log: RunLog | None = None  # the open log of a fit in progress
        self.loss_fn = loss_fn
        self.data = data
        self.config = config
        self.run_dir = Path(run_dir)
        if evaluate is None:
            from tripletkit.evaluation import retrieval_metrics

            def evaluate(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
                return retrieval_metrics(embeddings, labels)

        self.evaluate = evaluate
        labels = getattr(data.train, "labels", None)
        if labels is None:
            raise ValueError(
                "the training dataset must expose `labels` (one int label per item) for P×K sampling"
            )
        self.train_labels = np.asarray(labels)

    # ----------------------------------------------------------------------------------------
    # set-up

    def _distributed(self) -> tuple[int, int]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self._owns_process_group = True
            if self.device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _param_groups(self) -> list[dict[str, Any]]:
        """The model at ``optim.lr``; the loss's own parameters (proxies, a learnable margin) at the
        rate the loss asks for (``param_groups(lr)``), else ``optim.loss_lr_multiplier`` × lr."""
        optim = self.config.optim
        model_params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": model_params, "lr": optim.lr}]
        if hasattr(self.loss_fn, "param_groups"):
            loss_groups = [dict(g) for g in self.loss_fn.param_groups(optim.lr)]
        else:
            loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
            multiplied = optim.lr * optim.loss_lr_multiplier
            loss_groups = [{"params": loss_params, "lr": multiplied}] if loss_params else []
        for group in loss_groups:
            group.setdefault("weight_decay", 0.0)
        return groups + loss_groups

    def _loader(self, sampler: torch.utils.data.Sampler) -> torch.utils.data.DataLoader:
        workers = self.config.data.num_workers
        return torch.utils.data.DataLoader(
            self.data.train,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=self.data.collate or collate_items,
            persistent_workers=False,
        )

    # ----------------------------------------------------------------------------------------
    # pieces of the loop

    def _autocast(self):
        if self.precision == "fp16" and self.device.type in FP16_REFUSED_DEVICES:
            raise ValueError("train.precision 'fp16' needs a CUDA device; use 'bf16' on CPU")
        return autocast(self.precision, self.device.type)

    def _to_device(self, inputs: Any) -> Any:
        if isinstance(inputs, torch.Tensor):
            return inputs.to(self.device, non_blocking=True)
        return inputs

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        if self.world_size > 1 and self._mines_across_ranks:
            from tripletkit.mining import gather_batch

            # Every rank computes the loss of the global batch (world_size × batch); the gather's
            # backward sums the ranks' gradients, which DDP's averaging turns back into exactly the
            # single-process gradient of the concatenated batch.
            batch = gather_batch(embeddings, labels)
            return self.loss_fn(batch.embeddings, batch.labels)
        return self.loss_fn(embeddings, labels)

    def _loss_embeddings(self, inputs: Any) -> torch.Tensor:
        """What the loss trains: the projector's output when the model has one (through the
        DistributedDataParallel wrapper, so that its gradients are synchronised), else the
        embedding."""
        model = self._bare_model()
        if uses_projector(model):
            return self.model(inputs, project=True)
        return self.model(inputs)

    def validate(self) -> dict[str, Any]:
        """Embed the validation set and compute its metrics (rank 0)."""
        if self.data.validation is None:
            return {}
        model = self._bare_model()
        loader = torch.utils.data.DataLoader(
            self.data.validation,
            batch_size=512,
            shuffle=False,
            collate_fn=self.data.collate or collate_items,
        )
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        embeddings, labels = [], []
        with torch.no_grad(), self._autocast():
            for inputs, batch_labels in loader:
                embeddings.append(model(self._to_device(inputs)).float().cpu())
                labels.append(torch.as_tensor(batch_labels))
        model.train(was_training)
        metrics = self.evaluate(torch.cat(embeddings), torch.cat(labels))
        flat = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for k, v in (
            metrics.get("recall_at_k", {}).items()
            if isinstance(metrics.get("recall_at_k"), dict)
            else []
        ):
            flat[f"recall_at_{k}"] = float(v)
        flat["validation_seconds"] = time.perf_counter() - start
        return flat

    def _checkpoint_tensors_and_state(
        self, optimizer, epoch, position, step, progress
    ) -> tuple[dict, dict]:
        model = self._bare_model()
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"loss.{k}": v for k, v in self.loss_fn.state_dict().items()})
        rng_tensors, rng_state = _rng_state()
        tensors.update(rng_tensors)
        state = {
            "epoch": epoch,
            "position": position,
            "step": step,
            "optimizer": pack(optimizer.state_dict(), tensors, "optimizer"),
            # float16's loss scale (its value and growth counter): resuming continues with it.
            "grad_scaler": self._scaler.state_dict() if self._scaler.is_enabled() else None,
            "rng": rng_state,
            "config": self.config.to_dict(),
            "model_config": getattr(model, "config", None),
            "progress": progress,
        }
        return tensors, state

    def _save(self, name: str, optimizer, epoch, position, step, progress) -> None:
        tensors, state = self._checkpoint_tensors_and_state(
            optimizer, epoch, position, step, progress
        )
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.safetensors", tensors, state)

    def _restore(self, optimizer) -> dict[str, Any]:
        path = self.run_dir / "checkpoints" / "last.safetensors"
        tensors, state = load_checkpoint(path)
        saved = state["config"]
        defaults = RunConfig().to_dict()
        for section in ("data", "model", "loss"):
            # Keys added to the configuration after the checkpoint was written take their
            # defaults, so that an older run still resumes.
            if {**defaults[section], **saved[section]} != self.config.to_dict()[section]:
                raise CheckpointError(
                    f"cannot resume {str(self.run_dir)!r}: its {section} configuration differs from "
                    "this run's; resume with the same configuration (the run directory's config.json)"
                )
        model = self._bare_model()
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        loss_state = {k[5:]: v for k, v in tensors.items() if k.startswith("loss.")}
        if loss_state:
            self.loss_fn.load_state_dict(loss_state)
        load_optimizer_state(optimizer, unpack(state["optimizer"], tensors))
        if self._scaler.is_enabled() and state.get("grad_scaler"):
            self._scaler.load_state_dict(state["grad_scaler"])
        _set_rng_state(tensors, state["rng"])
        return state

    # ----------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainResult:
        """Train; with ``resume``, continue from ``run_dir``'s last checkpoint exactly.

        Under ``torchrun`` (``WORLD_SIZE`` > 1) with no process group open, ``fit`` opens one and
        closes it before returning, whether training succeeded or raised. A group the caller
        opened is left open. Either way ``self.model`` is handed back as the caller's module (not
        wrapped in DistributedDataParallel), with the best epoch's weights on every rank, and
        every rank returns the same :class:`TrainResult`.
        """
        self.model = self._bare_model()
        self.device = _resolve_device(self.config.train.device)
        self.rank, self.world_size = self._distributed()
        # "auto" resolved once per run (the device may be rank-local under torchrun).
        self.precision = resolve_precision(self.config.train.precision, self.device)
        try:
            return self._fit(resume)
        finally:
            self.model = self._bare_model()
            if self._run_log is not None:  # closed here too when training raised
                self._run_log.close()
                self._run_log = None
            if self._owns_process_group:
                # The group this trainer opened is closed here, before the interpreter exits: a
                # gloo group torn down at exit can abort the process ("terminate called without an
                # active exception") after training succeeded.
                dist.destroy_process_group()
                self._owns_process_group = False

    def _fit(self, resume: bool) -> TrainResult:
        config = self.config
        main_process = self.rank == 0
        # Batch losses (embeddings, labels) mine the gathered global batch under torchrun.
        self._mines_across_ranks = "labels" in inspect.signature(self.loss_fn.forward).parameters
        if not resume:
            seed_everything(config.train.seed)
        self.model.to(self.device)
        self.loss_fn.to(self.device)
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.train.keep_freed_memory:
            keep_freed_memory()
        param_groups = self._param_groups()
        # The fused kernel updates every tensor in one pass (CPU and CUDA, floating point only).
        fused = self.device.type in ("cpu", "cuda") and all(
            p.is_floating_point() for group in param_groups for p in group["params"]
        )
        optimizer = torch.optim.AdamW(
            param_groups, lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=fused
        )
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        # float16 trains with a dynamic loss scale, so that small gradients do not underflow to
        # zero; steps whose gradients overflow are skipped and the scale lowered. A no-op (the
        # same arithmetic as without it) in float32 and bfloat16.
        self._scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        sampler = PKSampler(
            self.train_labels,
            config.data.p,
            config.data.k,
            seed=config.train.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        batches_per_epoch = len(sampler)
        if self.world_size > 1:
            batches_per_epoch = self._agreed_batches_per_epoch(batches_per_epoch)
        if config.data.batches_per_epoch is not None:
            batches_per_epoch = min(batches_per_epoch, config.data.batches_per_epoch)
        accumulation = config.train.grad_accumulation
        steps_per_epoch = max(batches_per_epoch // accumulation, 1)
        batches_per_epoch = steps_per_epoch * accumulation
        total_steps = steps_per_epoch * config.train.epochs

        self.run_dir.mkdir(parents=True, exist_ok=True)
        progress: dict[str, Any] = {
            "before": {},
            "history": [],
            "best": None,
            "best_epoch": None,
            "bad_epochs": 0,
            "diagnoses": [],
            "seconds": 0.0,
        }
        start_epoch, start_position, step = 0, 0, 0
        if resume:
            state = self._restore(optimizer)
            start_epoch, start_position, step = state["epoch"], state["position"], state["step"]
            progress = state["progress"]
        elif main_process:
            config.save(self.run_dir / "config.json")
            self._save_model("model_initial")
        log = RunLog(
            self.run_dir,
            total_steps,
            quiet=config.train.quiet or not main_process,
            tensorboard=config.train.tensorboard and main_process,
            resume_step=step if resume else None,
            write=main_process,
        )
        self._run_log = log
        if main_process and not resume:
            progress["before"] = self.validate()
            log.epoch(-1, 0, {"phase": "before training", **progress["before"]})
        margin = float(getattr(self.loss_fn, "margin", 0.0) or 0.0)
        distance = getattr(self.loss_fn, "distance", "squared_euclidean")
        detector = CollapseDetector(
            margin, _DISTANCE_SCALE.get(distance, 1.0) if isinstance(distance, str) else 1.0
        )
        stopped_early = False
        trained = [p for g in optimizer.param_groups for p in g["params"]]
        self.model.train()
        run_start = time.perf_counter() - progress["seconds"]

        for epoch in range(start_epoch, config.train.epochs):
            sampler.set_epoch(epoch)
            if hasattr(self.data.train, "set_epoch"):
                self.data.train.set_epoch(epoch)
            epoch_batches = list(sampler)[:batches_per_epoch]
            position = start_position if epoch == start_epoch else 0
            loader = self._loader(_SkipBatches(epoch_batches, position))
            log.start_epoch(epoch, config.train.epochs, steps_per_epoch, position // accumulation)
            epoch_start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            for inputs, labels in loader:
                labels = torch.as_tensor(labels).to(self.device)
                with self._autocast():
                    embeddings = self._loss_embeddings(self._to_device(inputs))
                loss = self._loss(embeddings, labels)
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"the loss became {float(loss)} at step {step} (epoch {epoch + 1}); lower "
                        "optim.lr, enable gradient clipping (optim.grad_clip) or use train.precision=fp32"
                    )
                self._scaler.scale(loss / accumulation).backward()
                position += 1
                if position % accumulation:
                    continue
                factor = lr_factor(
                    step,
                    total_steps,
                    config.optim.warmup_fraction,
                    config.optim.schedule,
                    config.optim.min_lr_fraction,
                )
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                self._scaler.unscale_(optimizer)  # clipping sees the true gradients
                if config.optim.grad_clip:
                    clip_gradients(trained, config.optim.grad_clip)
                self._scaler.step(optimizer)  # skipped if a gradient overflowed (float16)
                self._scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if main_process:
                    record = {
                        "epoch": epoch,
                        "loss": float(loss.detach()),
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                    stats = getattr(self.loss_fn, "last_stats", None)
                    if stats is not None and hasattr(stats, "as_dict"):
                        record.update(
                            {
                                k: v
                                for k, v in stats.as_dict().items()
                                if isinstance(v, (int, float))
                            }
                        )
                        diagnosis = detector.update(
                            record["loss"],
                            float(record.get("active_triplet_fraction", 0.0)),
                            float(record.get("mean_negative_distance", math.inf)),
                        )
                        if diagnosis is not None:
                            progress["diagnoses"].append(diagnosis.message)
                            log.event(
                                step, f"warning: {diagnosis.message}", diagnosis=diagnosis.kind
                            )
                    log.step(step, record, samples=embeddings.shape[0] * accumulation)
                    if (
                        step % config.train.checkpoint_every_steps == 0
                        and position < batches_per_epoch
                    ):
                        progress["seconds"] = time.perf_counter() - run_start
                        self._save("last", optimizer, epoch, position, step, progress)

            epoch_metrics: dict[str, Any] = {"seconds": time.perf_counter() - epoch_start}
            epoch_metrics["loss"] = float(loss.detach())
            if main_process and (
                (epoch + 1) % config.train.eval_every_epochs == 0
                or epoch + 1 == config.train.epochs
            ):
                epoch_metrics.update(self.validate())
            improved = False
            metric_name = config.train.early_stopping_metric
            if main_process and metric_name in epoch_metrics:
                value = epoch_metrics[metric_name]
                if progress["best"] is None or value > progress["best"]:
                    progress["best"], progress["best_epoch"], progress["bad_epochs"] = (
                        value,
                        epoch,
                        0,
                    )
                    improved = True
                else:
                    progress["bad_epochs"] += 1
            progress["history"].append({"epoch": epoch, **epoch_metrics})
            progress["seconds"] = time.perf_counter() - run_start
            if main_process:
                log.epoch(epoch, step, epoch_metrics)
                if improved or progress["best_epoch"] is None:
                    self._save("best", optimizer, epoch + 1, 0, step, progress)
                self._save("last", optimizer, epoch + 1, 0, step, progress)
            patience = config.train.early_stopping_patience
            stop = patience is not None and progress["bad_epochs"] >= patience
            if self.world_size > 1:
                # Rank 0 alone validates, so it alone knows; every rank must leave the loop at the
                # same epoch, or the others wait forever in the next step's collectives.
                stop = self._rank0_decides(stop)
            if stop:
                stopped_early = True
                if main_process:
                    log.event(
                        step,
                        f"early stopping: {metric_name} has not improved for {patience} epochs",
                    )
                break

        log.close()
        after = progress["history"][-1] if progress["history"] else {}
        if main_process:
            after = self._finish(progress)
        if self.world_size > 1:
            after, progress = self._share_outcome(after, progress)
        return TrainResult(
            run_dir=self.run_dir,
            before=progress["before"],
            after=after,
            best_epoch=progress["best_epoch"],
            history=progress["history"],
            stopped_early=stopped_early,
            diagnoses=progress["diagnoses"],
            precision=self.precision,
        )

    # ----------------------------------------------------------------------------------------
    # agreement between ranks (torchrun): every rank must run the same number of steps and
    # epochs, or a collective of the step after waits forever

    def _agreed_batches_per_epoch(self, batches: int) -> int:
        """The batches per epoch every rank runs; an error on every rank if the ranks' training
        sets differ (each rank must load the same data for the sampler's split to be a
        partition)."""
        labels = np.ascontiguousarray(self.train_labels, dtype=np.int64)
        fingerprint = zlib.crc32(labels.tobytes())  # order-dependent, equal on equal label lists
        mine = torch.tensor([batches, labels.size, fingerprint], dtype=torch.int64)
        low = mine.to(self.device)
        high = low.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low[1:], high[1:]):
            # Every rank sees the mismatch and raises; the barrier lets the last transfers of the
            # all-reduce finish before any rank closes the group on its way out (a gloo peer that
            # goes away mid-transfer can abort the other: "terminate called without an active
            # exception", seen once in CI).
            dist.barrier()
            raise ValueError(
                f"rank {self.rank}: the training labels differ between ranks (sizes "
                f"{int(low[1])}..{int(high[1])}); every rank must load the same training set, in "
                "the same order: the P×K sampler splits one epoch between them"
            )
        return int(low[0])

    def _rank0_decides(self, flag: bool) -> bool:
        decision = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.broadcast(decision, src=0)
        return bool(decision.item())

    def _share_outcome(
        self, after: dict[str, Any], progress: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rank 0's best weights (loaded by ``_finish``) and results, on every rank."""
        model = self._bare_model()
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
        shared = [after, progress]
        dist.broadcast_object_list(shared, src=0, device=self.device)
        # A broadcast returns on rank 0 once sent: without the barrier rank 0 could close the
        # group while the others still receive (see _agreed_batches_per_epoch).
        dist.barrier()
        return shared[0], shared[1]

    def _bare_model(self) -> nn.Module:
        if isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.module
        return self.model

    def _save_model(self, name: str) -> None:
        """Save the model for inference as ``run_dir/<name>/`` (registry models only)."""
        model = self._bare_model()
        if getattr(model, "config", None) is None:
            return
        from tripletkit.models import save_model

        device = next(model.parameters()).device
        save_model(model.to("cpu"), self.run_dir / name)
        model.to(device)

    def _finish(self, progress: dict[str, Any]) -> dict[str, Any]:
        """Load the best weights, save the model for inference, write ``summary.json``."""
        model = self._bare_model()
        best_path = self.run_dir / "checkpoints" / "best.safetensors"
        if best_path.exists():
            tensors, _ = load_checkpoint(best_path)
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = next(
            (h for h in progress["history"] if h["epoch"] == progress["best_epoch"]),
            progress["history"][-1] if progress["history"] else {},
        )
        self._save_model("model")
        metric = self.config.train.early_stopping_metric
        before_value, best_value = progress["before"].get(metric), best.get(metric)
        if before_value is not None and best_value is not None and best_value < before_value:
            tries = "a lower optim.lr, fewer epochs or stronger augmentation"
            if getattr(self.loss_fn, "mining", None) not in (None, "easy-positive"):
                tries += ", or mining='easy-positive'"
            progress["diagnoses"].append(
                f"validation {metric} of the best epoch ({best_value:.4f}) is below the untrained "
                f"model's ({before_value:.4f}): training did not help the held-out classes. "
                f"Try {tries}; model_initial/ holds the untrained model."
            )
        summary = {
            "before": progress["before"],
            "after": best,
            "best_epoch": progress["best_epoch"],
            "history": progress["history"],
            "diagnoses": progress["diagnoses"],
            "seconds": progress["seconds"],
            "precision": self.precision,
            "data": self.data.summary,
        }
        atomic_write_text(
            self.run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n"
        )
        return best

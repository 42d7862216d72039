"""The phased training loop (DESIGN §7).

``train`` runs the phases of :class:`TrainingConfig` in order. Per phase: ``model.set_phase``,
a fresh AdamW with linear warm-up and cosine decay, and up to ``epochs`` FULL epochs — every
training date exactly once per epoch, in a seeded shuffled order, ``dates_per_batch`` whole
dates per optimiser step. After each epoch the model predicts every validation date (eval
mode, no gradients), the metrics of ``atft_pipeline.evaluation.metrics.evaluate`` are logged
per horizon, and early stopping watches the validation RankIC at h = 1.

Files in ``run_dir``: ``best_<phase>.pt`` (that phase's best epoch), ``last.pt`` (after every
epoch, with optimiser, schedule, RNG states and progress; ``resume=True`` continues from it
and reproduces an uninterrupted CPU run bit-for-bit) and ``final_metrics.json``.

A phase ends after its epochs or when the validation RankIC has not improved for
``early_stopping_patience`` epochs; the phase's best weights are then restored, so the next
phase starts from them. The run's model is the best checkpoint over all phases (ties go to
the later phase).

Out of memory (CUDA, or any backend's "out of memory" RuntimeError) inside a step: the step
is abandoned, memory released, ``dates_per_batch`` halved (down to 1) and the same dates are
retried — no date is ever skipped; the smaller size stays for the rest of the run.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.evaluation.metrics import METRIC_COLUMNS, evaluate
from atft_pipeline.model.atft_gat_fan import ATFTGATFAN
from atft_pipeline.model.config import UNIT_SCALE_TRANSFORMS, ModelConfig
from atft_pipeline.model.ensemble import ATFTEnsemble
from atft_pipeline.model.losses import CombinedLoss
from atft_pipeline.progress import progress_extra
from atft_pipeline.storage import atomic_write_text
from atft_pipeline.training.checkpoint import (
    LAST,
    best_name,
    capture_rng_state,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
)
from atft_pipeline.training.config import PhaseConfig, TrainingConfig
from atft_pipeline.training.device import (
    autocast,
    deterministic,
    is_out_of_memory,
    release_memory,
    resolve_device,
)
from atft_pipeline.training.host_memory import reuse_freed_memory
from atft_pipeline.training.distributed import DataParallel
from atft_pipeline.training.panel import Batch, Panel, graph_config
from atft_pipeline.training.predict import check_model_fits_panel, predict
from atft_pipeline.training.tracking import Tracker

log = logging.getLogger(__name__)

EARLY_STOPPING_HORIZON = 1
LOSS_TERMS = ("total", "quantile", "rank_ic", "ic", "sharpe")
FINAL_METRICS = "final_metrics.json"


class TrainCallback:
    """Hooks into the loop (tests use them to inject failures); the defaults do nothing.

    ``on_batch_start`` runs inside the guarded step, so an out-of-memory error raised there
    is handled exactly like one raised by the forward pass.
    """

    def on_batch_start(self, phase: str, epoch: int, batch: Batch) -> None:
        return None

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class TrainResult:
    best_checkpoint: Path
    best_phase: str
    best_metric: float  # validation RankIC (h=1) of the best checkpoint
    history: list[dict[str, Any]]  # one record per epoch, in order
    final_metrics: dict[int, dict[str, float | None]]  # validation metrics per horizon, best model
    model: ATFTGATFAN | ATFTEnsemble  # the best checkpoint's model (phase, eval mode)
    run_id: str
    dates_per_batch: int  # after any out-of-memory back-off


class WarmupCosine:
    """Learning rate of one phase as a function of the share of its planned dates processed.

    lr = peak·p/w during warm-up (p < w), then peak·½(1 + cos π(p − w)/(1 − w)), evaluated at
    the middle of each batch. Counting dates rather than steps keeps the schedule unchanged
    when an out-of-memory back-off changes the batch size.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, peak_lr: float, total_dates: int, warmup: float
    ) -> None:
        self.optimizer = optimizer
        self.peak_lr = peak_lr
        self.total_dates = total_dates
        self.warmup = warmup
        self.done = 0

    def factor(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        if p < self.warmup:
            return p / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * (p - self.warmup) / (1.0 - self.warmup)))

    def apply(self, n_dates: int) -> float:
        lr = self.peak_lr * self.factor((self.done + n_dates / 2) / self.total_dates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def advance(self, n_dates: int) -> None:
        self.done += n_dates

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total_dates": self.total_dates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["total_dates"] != self.total_dates:
            raise ValueError(
                f"schedule was planned for {state['total_dates']} dates, "
                f"this phase has {self.total_dates}"
            )
        self.done = int(state["done"])


@dataclass
class _Progress:
    """Everything about where the run is that ``last.pt`` must carry besides tensors."""

    phase_index: int = 0
    epoch: int = 0  # epochs completed in the current phase
    stopped: bool = False  # early stopping ended the current phase
    best_metric: float = -math.inf  # best validation RankIC (h=1) of the current phase
    bad_epochs: int = 0
    global_epoch: int = 0
    dates_per_batch: int = 1
    phase_bests: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> metric, epoch
    history: list[dict[str, Any]] = field(default_factory=list)

    def start_phase(self, index: int) -> None:
        self.phase_index, self.epoch, self.stopped = index, 0, False
        self.best_metric, self.bad_epochs = -math.inf, 0


@dataclass
class _EpochStats:
    terms: dict[str, float] = field(default_factory=dict)  # mean loss terms per date
    lr: float = 0.0  # learning rate of the epoch's last step
    n_batches: int = 0
    dates_seen: int = 0
    backoffs: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    panel: Panel,
    splits: SplitConfig,
    model_config: ModelConfig,
    training_config: TrainingConfig,
    run_dir: Path,
    tracker: Tracker,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainCallback] = (),
    parallel: DataParallel = DataParallel(),
) -> TrainResult:
    """Train the model on ``panel``'s train dates, select on its validation dates.

    See the module docstring. The panel is moved to the training device in place (on CUDA it
    then lives on the GPU). ``resume=True`` continues from ``run_dir/last.pt`` (a fresh run
    when there is none); without it, checkpoints left in ``run_dir`` are replaced. The tracker
    is not finished here: its owner ends the run (and marks a failure as such).
    """
    run_dir = Path(run_dir)
    device = resolve_device(training_config.device)
    _check_graph_settings(panel, model_config)
    _check_target_scale(model_config, training_config)
    train_idx = panel.date_indices(splits.train.start, splits.train.end)
    val_idx = panel.date_indices(splits.val.start, splits.val.end)
    if train_idx.size == 0 or val_idx.size == 0:
        raise ValueError(
            f"the panel ({panel.dates[0]}..{panel.dates[-1]}) has {train_idx.size} train and "
            f"{val_idx.size} validation dates with valid stocks; both must be non-empty"
        )
    panel.to(device)
    # on the host, a step's large tensors reuse the previous step's freed heap memory
    with deterministic(device), reuse_freed_memory():
        return _Trainer(
            panel,
            model_config,
            training_config,
            run_dir,
            tracker,
            device,
            train_idx,
            val_idx,
            callbacks,
            parallel,
        ).run(resume)


def _check_graph_settings(panel: Panel, model_config: ModelConfig) -> None:
    expected = graph_config(model_config)
    if panel.graph != expected:
        raise ValueError(f"panel graph settings {panel.graph} differ from the model's {expected}")


def _check_target_scale(model_config: ModelConfig, training_config: TrainingConfig) -> None:
    """The heads must start on the scale of the targets the loss sees."""
    transform = training_config.loss.target_transform
    expected = "unit" if transform in UNIT_SCALE_TRANSFORMS else "returns"
    if model_config.target_scale != expected:
        raise ValueError(
            f"loss target_transform {transform!r} trains on {expected!r}-scale targets, but "
            f"the model's target_scale is {model_config.target_scale!r}"
        )


class _Trainer:
    def __init__(
        self,
        panel: Panel,
        model_config: ModelConfig,
        config: TrainingConfig,
        run_dir: Path,
        tracker: Tracker,
        device: torch.device,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        callbacks: Sequence[TrainCallback],
        parallel: DataParallel = DataParallel(),
    ) -> None:
        self.panel = panel
        self.model_config = model_config
        self.config = config
        self.run_dir = run_dir
        self.tracker = tracker
        self.device = device
        self.train_idx = train_idx
        self.val_idx = val_idx
        self.callbacks = list(callbacks)
        seed_everything(config.seed)
        self.model = ATFTGATFAN(model_config).to(device)
        self.parallel = parallel  # several processes: each step's dates split among them
        self.forward_model = parallel.wrap(self.model, device)
        check_model_fits_panel(self.model, panel)
        self.loss = CombinedLoss(
            config.loss, model_config.quantiles, len(model_config.horizons)
        ).to(device)
        self.progress = _Progress(dates_per_batch=config.dates_per_batch)
        self.meta = {
            "model_config": model_config.model_dump(mode="json"),
            "training_config": config.model_dump(mode="json"),
            "feature_columns": list(panel.feature_columns),
            "stats_hash": panel.stats_hash,
            "window": panel.window,
            "graph": asdict(panel.graph),
            "horizons": list(panel.horizons),
        }

    # ------------------------------------------------------------------ run

    def run(self, resume: bool) -> TrainResult:
        resumed = self._load_last() if resume else None
        if resumed is None:
            self._clear_checkpoints()
        self.tracker.log_params(
            {
                "model": self.meta["model_config"],
                "training": self.meta["training_config"],
                "data": {
                    "n_features": self.panel.n_features,
                    "n_stocks": self.panel.n_stocks,
                    "train_dates": int(self.train_idx.size),
                    "val_dates": int(self.val_idx.size),
                    "stats_hash": self.panel.stats_hash,
                },
            }
        )
        for index in range(self.progress.phase_index, len(self.config.phases)):
            phase = self.config.phases[index]
            self.model.set_phase(phase.name)
            optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=phase.lr, weight_decay=phase.weight_decay
            )
            schedule = WarmupCosine(
                optimizer, phase.lr, phase.epochs * self.train_idx.size, phase.warmup_fraction
            )
            if resumed is not None and resumed["phase_index"] == index:
                optimizer.load_state_dict(resumed["optimizer"])
                schedule.load_state_dict(resumed["schedule"])
                resumed = None
            else:
                self.progress.start_phase(index)
            while self.progress.epoch < phase.epochs and not self.progress.stopped:
                self._epoch(phase, optimizer, schedule)
            self._end_phase(phase)
        return self._finish()

    def _load_last(self) -> dict[str, Any] | None:
        path = self.run_dir / LAST
        if not path.exists():
            log.info("no %s to resume from; starting a fresh run", path)
            return None
        payload = load_checkpoint(path, map_location=self.device)
        for key in ("model_config", "training_config"):
            if payload[key] != self.meta[key]:
                raise ValueError(f"cannot resume from {path}: its {key} differs from this run's")
        self.model.load_state_dict(payload["model"])
        self.progress = _Progress(**payload["progress"])
        restore_rng_state(payload["rng"])
        log.info(
            "resuming from %s: phase %d, epoch %d",
            path,
            self.progress.phase_index,
            self.progress.epoch,
        )
        return {"phase_index": self.progress.phase_index, **payload}

    def _clear_checkpoints(self) -> None:
        for name in (LAST, *(best_name(p.name) for p in self.config.phases), FINAL_METRICS):
            (self.run_dir / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ one epoch

    def _epoch(
        self, phase: PhaseConfig, optimizer: torch.optim.Optimizer, schedule: WarmupCosine
    ) -> None:
        """Train one full epoch, validate, update early stopping, checkpoint and log."""
        p = self.progress
        started = time.perf_counter()
        epoch = p.epoch + 1
        stats = _EpochStats()
        train_loss = self._train_epoch(phase, epoch, optimizer, schedule, stats)
        val = self._validate()
        metric = val[EARLY_STOPPING_HORIZON]["rank_ic"]
        improved = (
            metric is not None and metric > p.best_metric + self.config.early_stopping_min_delta
        )
        p.epoch, p.global_epoch = epoch, p.global_epoch + 1
        if improved:
            p.best_metric, p.bad_epochs = metric, 0
            p.phase_bests[phase.name] = {"metric": metric, "epoch": epoch}
            self._save_best(phase, epoch, metric)
        else:
            p.bad_epochs += 1
            p.stopped = p.bad_epochs >= self.config.early_stopping_patience
        record = {
            "phase": phase.name,
            "phase_index": p.phase_index,
            "epoch": epoch,
            "global_epoch": p.global_epoch,
            "train_loss": train_loss,
            "train_terms": stats.terms,
            "lr": stats.lr,
            "dates_per_batch": p.dates_per_batch,
            "n_batches": stats.n_batches,
            "dates_seen": stats.dates_seen,
            "oom_backoffs": stats.backoffs,
            "val": val,
            "val_rank_ic_h1": metric,
            "improved": improved,
            "early_stopped": p.stopped,
            "seconds": time.perf_counter() - started,
        }
        p.history.append(record)
        self._save_last(optimizer, schedule)
        self.tracker.log_metrics(_flat_metrics(record), step=p.global_epoch)
        log.info(
            "phase %s epoch %d: train loss %.5f, val RankIC(h=1) %s%s, %.1fs",
            phase.name,
            epoch,
            train_loss,
            "n/a" if metric is None else f"{metric:.4f}",
            " (best)" if improved else "",
            record["seconds"],
            extra=progress_extra(f"phase {phase.name}", keep=True),
        )
        for callback in self.callbacks:
            callback.on_epoch_end(record)

    def _train_epoch(
        self,
        phase: PhaseConfig,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosine,
        stats: _EpochStats,
    ) -> float:
        """One pass over every training date (seeded shuffle); returns the mean total loss
        per date and fills ``stats`` with the loss terms, batches and back-offs."""
        p = self.progress
        order = self.train_idx[
            np.random.default_rng([self.config.seed, p.phase_index, epoch]).permutation(
                self.train_idx.size
            )
        ]
        planned_batches = math.ceil(order.size / p.dates_per_batch)
        self.model.train()
        sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=self.device)
        seen: list[np.ndarray] = []
        cursor = 0
        while cursor < order.size:
            chunk = order[cursor : cursor + p.dates_per_batch]
            try:
                terms, stats.lr = self._step(phase, epoch, chunk, optimizer, schedule)
            except RuntimeError as error:
                if not is_out_of_memory(error) or chunk.size == 1:
                    raise
            else:
                sums += terms * chunk.size
                seen.append(chunk)
                cursor += chunk.size
                continue
            # Out of memory: the failed step's tensors died with the exception; retry its dates.
            optimizer.zero_grad(set_to_none=True)
            release_memory(self.device)
            p.dates_per_batch = max(1, chunk.size // 2)
            stats.backoffs += 1
            log.warning(
                "out of memory on a batch of %d dates (phase %s, epoch %d); retrying with %d",
                chunk.size,
                phase.name,
                epoch,
                p.dates_per_batch,
            )
        self._check_full_epoch(seen, planned_batches, stats.backoffs)
        means = (sums / order.size).tolist()
        if not all(math.isfinite(v) for v in means):
            raise FloatingPointError(
                f"non-finite training loss in phase {phase.name!r}, epoch {epoch}: "
                f"{dict(zip(LOSS_TERMS, means, strict=True))}"
            )
        stats.terms = dict(zip(LOSS_TERMS[1:], means[1:], strict=True))
        stats.n_batches = len(seen)
        stats.dates_seen = int(sum(c.size for c in seen))
        return float(means[0])

    def _step(
        self,
        phase: PhaseConfig,
        epoch: int,
        chunk: np.ndarray,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosine,
    ) -> tuple[Tensor, float]:
        """One optimiser step on the dates ``chunk``; the loss terms stay on the device (no
        host sync per step)."""
        part, weight = self.parallel.part(chunk)
        batch = self.panel.gather(part, with_graph=self.model.phase.uses_gat)
        for callback in self.callbacks:
            callback.on_batch_start(phase.name, epoch, batch)
        lr = schedule.apply(chunk.size)
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.bf16):
            out = self.forward_model(
                batch.x, batch.static_ids, batch.date_index, batch.edge_index, batch.edge_attr
            )
        terms = self.loss(
            out.quantiles,
            out.point,
            batch.targets,
            batch.date_index,
            valid=batch.target_mask,
            n_dates=batch.n_dates,
        )
        (terms["total"] * weight).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), phase.clip_norm)
        optimizer.step()
        schedule.advance(chunk.size)
        stacked = torch.stack([terms[k].detach().double() for k in LOSS_TERMS])
        return self.parallel.mean_terms(stacked, weight), lr

    def _check_full_epoch(
        self, seen: list[np.ndarray], planned_batches: int, backoffs: int
    ) -> None:
        """Every training date exactly once; without a back-off, exactly the planned batches."""
        dates = np.sort(np.concatenate(seen))
        if not np.array_equal(dates, np.sort(self.train_idx)):
            raise RuntimeError(
                f"epoch covered {dates.size} dates ({np.unique(dates).size} distinct) instead of "
                f"each of the {self.train_idx.size} training dates once"
            )
        if backoffs == 0 and len(seen) != planned_batches:
            raise RuntimeError(f"epoch ran {len(seen)} batches, planned {planned_batches}")

    def _validate(self) -> dict[int, dict[str, float | None]]:
        frame = predict(
            self.model,
            self.panel,
            self.val_idx,
            "val",
            dates_per_batch=self.config.eval_dates_per_batch,
            bf16=self.config.bf16,
        )
        return horizon_metrics(frame)

    # ------------------------------------------------------------------ checkpoints

    def _save_best(self, phase: PhaseConfig, epoch: int, metric: float) -> None:
        save_checkpoint(
            self.run_dir / best_name(phase.name),
            {
                **self.meta,
                "phase": phase.name,
                "epoch": epoch,
                "metric": metric,
                "model": self.model.state_dict(),
            },
        )

    def _save_last(self, optimizer: torch.optim.Optimizer, schedule: WarmupCosine) -> None:
        phase = self.config.phases[self.progress.phase_index]
        save_checkpoint(
            self.run_dir / LAST,
            {
                **self.meta,
                "phase": phase.name,
                "model": self.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": capture_rng_state(),
                "progress": asdict(self.progress),
            },
        )

    def _end_phase(self, phase: PhaseConfig) -> None:
        """Continue from the phase's best weights (if any epoch produced a defined metric)."""
        path = self.run_dir / best_name(phase.name)
        if phase.name not in self.progress.phase_bests:
            log.warning(
                "phase %s never produced a defined validation RankIC; keeping its last weights",
                phase.name,
            )
            return
        self.model.load_state_dict(load_checkpoint(path, map_location=self.device)["model"])

    def _finish(self) -> TrainResult:
        bests = self.progress.phase_bests
        if not bests:
            raise RuntimeError(
                "no epoch produced a defined validation RankIC (h=1); nothing to select"
            )
        best_phase = None
        for phase in self.config.phases:  # ties go to the later (more complete) phase
            if phase.name in bests and (
                best_phase is None or bests[phase.name]["metric"] >= bests[best_phase]["metric"]
            ):
                best_phase = phase.name
        assert best_phase is not None
        best_path = self.run_dir / best_name(best_phase)
        model, _ = load_model(best_path, self.device)
        # The best checkpoint holds the weights its epoch validated: that epoch's validation
        # metrics are the final ones (no second pass over the validation dates).
        best_epoch = bests[best_phase]["epoch"]
        final = next(
            record["val"]
            for record in self.progress.history
            if record["phase"] == best_phase and record["epoch"] == best_epoch
        )
        final_path = self.run_dir / FINAL_METRICS
        atomic_write_text(
            final_path,
            json.dumps(
                {
                    "best_phase": best_phase,
                    "best_checkpoint": best_path.name,
                    "val": {str(h): m for h, m in final.items()},
                },
                indent=2,
            )
        )
        self.tracker.log_artifact(final_path)
        self.tracker.log_artifact(best_path)
        return TrainResult(
            best_checkpoint=best_path,
            best_phase=best_phase,
            best_metric=bests[best_phase]["metric"],
            history=list(self.progress.history),
            final_metrics=final,
            model=model,
            run_id=self.tracker.run_id,
            dates_per_batch=self.progress.dates_per_batch,
        )


def horizon_metrics(frame: pl.DataFrame) -> dict[int, dict[str, float | None]]:
    """``evaluate``'s metrics of one model/split's predictions, keyed by horizon."""
    table = evaluate(frame)
    return {
        int(row["horizon"]): {k: row[k] for k in METRIC_COLUMNS}
        for row in table.iter_rows(named=True)
    }


def _flat_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {
        "train_loss": record["train_loss"],
        **{f"train_{k}": v for k, v in record["train_terms"].items()},
        "lr": record["lr"],
        "dates_per_batch": float(record["dates_per_batch"]),
        "phase_index": float(record["phase_index"]),
        "epoch_seconds": record["seconds"],
    }
    for horizon, metrics in record["val"].items():
        for name, value in metrics.items():
            flat[f"val_h{horizon}_{name}"] = None if value is None else float(value)
    return flat

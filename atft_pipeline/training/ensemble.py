"""Training an ensemble of independently seeded models (``training.ensemble_members``).

Member ``i`` is an ordinary one-model :func:`~atft_pipeline.training.loop.train` run with
seed ``seed + i`` in ``run_dir/member<i>`` (its own checkpoints, ``last.pt`` and resume, so
growing an ensemble with ``resume=True`` trains only the new members), tracked
into the caller's run under the prefix ``member<i>``. The members' best checkpoints are then
joined into ``run_dir/ensemble.pt``, the ensemble predicts every validation date once, and
those metrics are the run's final ones (``run_dir/final_metrics.json``). With one member this
is exactly ``train``.

Members train one after the other: each already uses the machine's cores, and a killed run
resumes the member it was in (``resume=True``), the finished members reload in seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atft_pipeline.dataset.splits import SplitConfig
from atft_pipeline.model.config import ModelConfig
from atft_pipeline.progress import progress_extra
from atft_pipeline.storage import atomic_write_text
from atft_pipeline.training.checkpoint import (
    ENSEMBLE,
    ensemble_payload,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from atft_pipeline.training.config import TrainingConfig
from atft_pipeline.training.loop import (
    EARLY_STOPPING_HORIZON,
    FINAL_METRICS,
    TrainCallback,
    TrainResult,
    horizon_metrics,
    train,
)
from atft_pipeline.training.panel import Panel
from atft_pipeline.training.predict import predict
from atft_pipeline.training.tracking import Tracker

log = logging.getLogger(__name__)


def member_dir(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"member{index}"


class MemberTracker:
    """A member's view of the ensemble's run: parameters under ``member<i>.``, metrics under
    ``member<i>_``. Artifacts are not forwarded (every member's checkpoint would have the same
    name; ``ensemble.pt`` holds all their weights), and the run is finished by its owner."""

    def __init__(self, tracker: Tracker, index: int) -> None:
        self.tracker = tracker
        self.prefix = f"member{index}"

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_params({self.prefix: dict(params)})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        self.tracker.log_metrics({f"{self.prefix}_{k}": v for k, v in metrics.items()}, step)

    def log_artifact(self, path: Path) -> None:
        return None

    def finish(self, status: str = "FINISHED") -> None:
        return None


def train_ensemble(
    panel: Panel,
    splits: SplitConfig,
    model_config: ModelConfig,
    training_config: TrainingConfig,
    run_dir: Path,
    tracker: Tracker,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainCallback] = (),
) -> TrainResult:
    """Train ``training_config.ensemble_members`` members and join them (module docstring).

    The result's ``best_checkpoint`` is ``ensemble.pt`` and its ``model`` the ensemble;
    ``history`` holds every member's epochs (each record tagged with its ``member``).
    """
    n_members = training_config.ensemble_members
    if n_members == 1:
        return train(
            panel, splits, model_config, training_config, run_dir, tracker,
            resume=resume, callbacks=callbacks,
        )
    run_dir = Path(run_dir)
    members = []
    for index in range(n_members):
        # each member is a plain one-model run: a larger ensemble later resumes these
        config = training_config.model_copy(
            update={"seed": training_config.seed + index, "ensemble_members": 1}
        )
        log.info(
            "ensemble member %d of %d (seed %d)", index + 1, n_members, config.seed,
            extra=progress_extra("ensemble", keep=True),
        )
        result = train(
            panel, splits, model_config, config, member_dir(run_dir, index),
            MemberTracker(tracker, index), resume=resume, callbacks=callbacks,
        )
        members.append(result)
    payload = ensemble_payload([load_checkpoint(m.best_checkpoint) for m in members])
    path = save_checkpoint(
        run_dir / ENSEMBLE,
        {**payload, "training_config": training_config.model_dump(mode="json")},
    )
    model, _ = load_model(path, panel.device)
    val_idx = panel.date_indices(splits.val.start, splits.val.end)
    final = horizon_metrics(
        predict(
            model, panel, val_idx, "val",
            dates_per_batch=training_config.eval_dates_per_batch, bf16=training_config.bf16,
        )
    )
    metric = final[EARLY_STOPPING_HORIZON]["rank_ic"]
    tracker.log_metrics(
        {f"ensemble_val_h{h}_{name}": v for h, m in final.items() for name, v in m.items()},
        step=max(len(m.history) for m in members) + 1,
    )
    final_path = run_dir / FINAL_METRICS
    atomic_write_text(
        final_path,
        json.dumps(
            {
                "best_phase": "ensemble",
                "best_checkpoint": ENSEMBLE,
                "members": [
                    {"dir": m.best_checkpoint.parent.name, "best_phase": m.best_phase,
                     "val_rank_ic_h1": m.best_metric}
                    for m in members
                ],
                "val": {str(h): m for h, m in final.items()},
            },
            indent=2,
        ),
    )
    tracker.log_artifact(final_path)
    tracker.log_artifact(path)
    return TrainResult(
        best_checkpoint=path,
        best_phase="ensemble",
        best_metric=float("nan") if metric is None else float(metric),
        history=[
            {**record, "member": index}
            for index, m in enumerate(members)
            for record in m.history
        ],
        final_metrics=final,
        model=model,
        run_id=tracker.run_id,
        dates_per_batch=min(m.dates_per_batch for m in members),
    )

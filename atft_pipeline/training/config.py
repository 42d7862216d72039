"""Typed training configuration: phases, optimisation, loss weights, early stopping, device.

The phase schedule follows DESIGN §7 (baseline → +FAN → +GAT → fine-tune); each phase gets
its own AdamW with linear warm-up then cosine decay to 0 over the phase's planned dates.
The loss weights are the model package's :class:`LossConfig` (pinball, RankIC surrogate, IC,
Sharpe), embedded as ``loss``. The demo and production presets differ only in sizes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atft_pipeline.model.atft_gat_fan import PHASES
from atft_pipeline.model.config import LossConfig


class PhaseConfig(BaseModel):
    """One training phase: the model's forward path (``name``) and its optimiser settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description=f"model phase, one of {list(PHASES)}")
    epochs: int = Field(ge=1, description="full passes over every training date (upper bound)")
    lr: float = Field(gt=0.0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(0.01, ge=0.0)
    clip_norm: float = Field(1.0, gt=0.0, description="global gradient-norm clip")
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the phase's dates")

    @field_validator("name")
    @classmethod
    def _known_phase(cls, name: str) -> str:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {list(PHASES)}")
        return name


def default_phases(epochs: tuple[int, int, int, int] = (5, 10, 8, 6)) -> tuple[PhaseConfig, ...]:
    """baseline → fan → gat → finetune with the learning rates of MODEL_NOTES (5e-4, 5e-4,
    1e-4, 5e-5; fine-tune clips at 0.5)."""
    baseline, fan, gat, finetune = epochs
    return (
        PhaseConfig(name="baseline", epochs=baseline, lr=5e-4),
        PhaseConfig(name="fan", epochs=fan, lr=5e-4),
        PhaseConfig(name="gat", epochs=gat, lr=1e-4),
        PhaseConfig(name="finetune", epochs=finetune, lr=5e-5, clip_norm=0.5),
    )


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 42
    dates_per_batch: int = Field(8, ge=1, description="dates per optimiser step (all their stocks)")
    eval_dates_per_batch: int = Field(32, ge=1, description="dates per forward pass in validation")
    phases: tuple[PhaseConfig, ...] = Field(default_factory=default_phases, min_length=1)
    loss: LossConfig = Field(default_factory=LossConfig)
    ensemble_members: int = Field(
        1,
        ge=1,
        le=16,
        description="independently seeded models (seeds seed, seed+1, ...) trained one after "
        "the other; their mean forecast is the model (atft_pipeline.training.ensemble)",
    )
    early_stopping_patience: int = Field(
        3, ge=1, description="epochs without a better validation RankIC (h=1) before a phase ends"
    )
    early_stopping_min_delta: float = Field(0.0, ge=0.0, description="improvement that counts")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    max_epochs: int = Field(200, ge=1, description="safety bound on the epochs of all phases")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(
                f"phase names must be distinct (one best checkpoint each), got {names}"
            )
        total = sum(p.epochs for p in self.phases)
        if total > self.max_epochs:
            raise ValueError(
                f"the phases ask for {total} epochs, more than max_epochs={self.max_epochs}"
            )
        return self

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @classmethod
    def demo(cls, **overrides: Any) -> TrainingConfig:
        """The 2-core CPU demo: one epoch per phase, whole dates per step."""
        values: dict[str, Any] = dict(
            dates_per_batch=8,
            eval_dates_per_batch=32,
            phases=default_phases((1, 1, 1, 1)),
            early_stopping_patience=2,
            device="auto",
        )
        return cls(**(values | overrides))

    @classmethod
    def production(cls, **overrides: Any) -> TrainingConfig:
        """The GPU configuration: the full phase schedule, bf16 autocast."""
        values: dict[str, Any] = dict(
            dates_per_batch=4,
            eval_dates_per_batch=16,
            phases=default_phases((5, 10, 8, 6)),
            early_stopping_patience=4,
            device="auto",
            bf16=True,
        )
        return cls(**(values | overrides))

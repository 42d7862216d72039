"""The pipeline configuration file: one typed section per concern, unknown keys are errors.

``atft run --config FILE`` validates the file and keeps a copy as ``ATFT_HOME/config.yaml``,
which the Dagster definitions read too, so the UI runs with exactly the configuration of the
last command-line run. No file means every default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atft_pipeline.dataset.splits import MIN_GAP, DateWindow, SplitConfig
from atft_pipeline.errors import UsageError
from atft_pipeline.storage import atomic_write_text


class DatasetConfig(BaseModel):
    """Which feature families build the dataset.

    ``families``: None = every family whose raw sources the plan entitles; a list names them
    explicitly. ``disabled``: families to leave out (e.g. those whose sources a replay lacks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    families: list[str] | None = None
    disabled: list[str] = Field(default_factory=list)
    min_history_days: int = Field(default=20, ge=0, description="universe: sessions listed")


class SplitSpec(BaseModel):
    """Explicit windows (``windows``) or chronological fractions of the run's range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: SplitConfig | None = None
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    gap: int = Field(default=MIN_GAP, ge=MIN_GAP)
    # Keep only the most recent N train days (a stated training window, not a batch cap).
    max_train_days: int | None = Field(default=None, ge=20)
    # Leave out the first N days of the range: their long-lookback features are immature.
    warmup_days: int = Field(default=0, ge=0)

    def resolve(self, days: list) -> SplitConfig:
        """The windows for ``days`` (ascending trading days with a stored dataset)."""
        if self.windows is not None:
            return self.windows
        days = days[self.warmup_days :]
        split = SplitConfig.from_dates(days, self.val_fraction, self.test_fraction, self.gap)
        if self.max_train_days is not None:
            train = [d for d in days if split.train.contains(d)][-self.max_train_days :]
            split = split.model_copy(update={"train": DateWindow(start=train[0], end=train[-1])})
        return split


class ModelSection(BaseModel):
    """ATFT-GAT-FAN sizes: a preset (``demo`` for 2 CPU cores, ``production`` for a GPU) plus
    overrides of ``atft_pipeline.model.ModelConfig`` fields (unknown fields are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["demo", "production"] = "demo"
    overrides: dict[str, Any] = Field(default_factory=dict)

    def build(self, n_features: int):
        from atft_pipeline.model.config import ModelConfig  # torch-free module, imported lazily

        return getattr(ModelConfig, self.preset)(n_features, **self.overrides)


class TrainingSection(BaseModel):
    """Preset + overrides of ``atft_pipeline.training.TrainingConfig``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["demo", "production"] = "demo"
    overrides: dict[str, Any] = Field(default_factory=dict)
    # Multiplies the peak learning rate of every phase (after the overrides): one knob for
    # the optimiser's step size that keeps the phases' ratios (tuned by `atft tune`).
    lr_scale: float = Field(default=1.0, gt=0)
    # The 1-day return feature behind the per-date stock graphs (price family).
    graph_return_column: str = "logret_1d"

    def build(self):
        from atft_pipeline.training.config import TrainingConfig

        config = getattr(TrainingConfig, self.preset)(**self.overrides)
        if self.lr_scale == 1.0:
            return config
        phases = tuple(p.model_copy(update={"lr": p.lr * self.lr_scale}) for p in config.phases)
        return config.model_copy(update={"phases": phases})


class EvaluationSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cost_bp: float = Field(default=10.0, ge=0, description="one-way cost per unit turnover")
    # Overrides of atft_pipeline.evaluation.baselines.LightGBMConfig / RidgeConfig (unknown
    # keys are errors).
    lightgbm: dict[str, Any] = Field(default_factory=dict)
    ridge: dict[str, Any] = Field(default_factory=dict)
    # The validation-predictions check fails a model whose predictions are all equal on more
    # than this share of its scored dates (atft_pipeline.evaluation.health).
    max_constant_share: float = Field(default=0.05, ge=0, lt=1)

    def lightgbm_config(self):
        from atft_pipeline.evaluation.baselines import LightGBMConfig

        return LightGBMConfig(**self.lightgbm)

    def ridge_config(self):
        from atft_pipeline.evaluation.baselines import RidgeConfig

        return RidgeConfig(**self.ridge)


class OrchestrationSection(BaseModel):
    """How the deployment's daemon drives the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Seconds between ticks of the missing-partition recovery sensor: a lost file is restored
    # within about this long. Each tick lists every raw asset's stored partitions.
    recovery_sensor_interval_s: int = Field(default=300, ge=5)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetConfig = DatasetConfig()
    splits: SplitSpec = SplitSpec()
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    orchestration: OrchestrationSection = OrchestrationSection()

    def check_builds(self) -> None:
        """Build the model and training configs once, so bad overrides fail at load time."""
        try:
            self.model.build(n_features=1)
            self.training.build()
            self.evaluation.lightgbm_config()
            self.evaluation.ridge_config()
        except (ValidationError, TypeError) as exc:
            raise ConfigError(f"invalid model/training configuration: {exc}") from exc


class ConfigError(UsageError, ValueError):
    """The configuration file is unreadable or names a key or value the schema does not have."""


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read and validate a YAML configuration file (None: all defaults).

    The model/training overrides need torch to check; ``atft run`` calls
    ``check_builds()`` on the result, the (torch-free) code location does not.
    """
    if path is None:
        return PipelineConfig()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: " + "; ".join(_problem(e) for e in exc.errors())) from exc
    return config


def _problem(error: dict) -> str:
    """One validation error as a sentence naming the dotted key (and, for an unknown key,
    the keys its section has)."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] != "extra_forbidden":
        return f"{key}: {error['msg']}"
    section: type[BaseModel] = PipelineConfig
    for part in error["loc"][:-1]:
        annotation = section.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        section = annotation
    valid = ", ".join(section.model_fields)
    return f"unknown key {key!r}; valid keys here: {valid}"


def dump_config(config: PipelineConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=True))

"""What a hyperparameter study searches: typed settings, each a dotted key of the pipeline
configuration (``model.overrides.hidden``, ``training.lr_scale``,
``training.overrides.loss.rank_ic_weight``), and the study's own settings.

A search file (``configs/tuning.yaml``) is validated when it is loaded: unknown keys are
errors, and every parameter is applied once at its lowest value (or first choice) to the base
configuration and built, so a key the configuration does not have fails before any trial runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atft_pipeline.config import ConfigError, PipelineConfig


class Parameter(BaseModel):
    """One searched setting: a float or int range (optionally log-scaled) or a choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="dotted key into the pipeline configuration")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Parameter:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError(f"{self.key}: a categorical parameter takes choices, not low/high")
        elif self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"{self.key}: a {self.type} parameter takes low and high, not choices")
        elif self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"{self.key}: need 0 < low <= high for log, low <= high otherwise")
        return self

    def suggest(self, trial) -> Any:
        """The trial's value (an ``optuna.Trial``), under this parameter's key."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def first_value(self) -> Any:
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else self.low


class PrunerSettings(BaseModel):
    """Median pruning on validation RankIC(1d): a trial stops once its value at an epoch is
    below the median of earlier trials at that epoch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    startup_trials: int = Field(3, ge=0, description="trials that are never pruned")
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial that are never pruned")


class SearchSpace(BaseModel):
    """A study: its name, how many finished trials it wants, the sampler seed, the pruner and
    the parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    trials: int = Field(ge=1, description="finished (complete or pruned) trials the study ends with")
    seed: int = 0
    pruner: PrunerSettings = PrunerSettings()
    parameters: tuple[Parameter, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> SearchSpace:
        keys = [p.key for p in self.parameters]
        if len(set(keys)) != len(keys):
            raise ValueError(f"parameter keys must be distinct, got {keys}")
        return self

    def check_against(self, base: PipelineConfig) -> None:
        """Fail now if a key does not exist or a value cannot build (``ConfigError``)."""
        apply_values(base, {p.key: p.first_value() for p in self.parameters}).check_builds()


def apply_values(base: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """``base`` with each dotted key set to its value, validated like a configuration file.

    Keys inside an ``overrides`` mapping may be new (they are checked when the model or
    training configuration is built); any other key must already exist.
    """
    data = base.model_dump(mode="json")
    for key, value in values.items():
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            inside_overrides = "overrides" in parts[:depth]
            if part not in node and not inside_overrides and part != "overrides":
                raise ConfigError(f"search key {key!r}: the configuration has no {part!r}")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"search key {key!r}: {part!r} is not a section")
        if parts[-1] not in node and "overrides" not in parts[:-1]:
            raise ConfigError(f"search key {key!r}: the configuration has no {parts[-1]!r}")
        node[parts[-1]] = copy.deepcopy(value)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"search values {values}: {exc}") from exc


def load_search_space(path: str | Path, base: PipelineConfig) -> SearchSpace:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        space = SearchSpace.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"cannot read search file {path}: {exc}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"search file {path}: {exc}") from exc
    space.check_against(base)
    return space

"""Experiment tracking: one small protocol, an MLflow backend, a JSON-lines backend, a fan-out.

The trainer logs the run's parameters once, then one metrics record per epoch (training loss
and every validation metric per horizon) and finally artifacts (best checkpoint, final
metrics). Parameters are flattened to ``a.b`` keys; any key that looks like a credential is
dropped before it reaches a backend (the J-Quants API key never belongs in a run).

Every run ends: :func:`tracked_run` finishes it as ``FINISHED``, ``FAILED`` (an exception) or
``KILLED`` (an interrupt), so no run is left ``RUNNING``. :func:`run_name` names a run by
model, configuration hash and date range.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

log = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"api[_-]?key|password|secret|token", re.IGNORECASE)
_MLFLOW_PARAM_LIMIT = 6000  # characters MLflow accepts in one parameter value


@runtime_checkable
class Tracker(Protocol):
    @property
    def run_id(self) -> str: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b": "value"}``; credential-like keys are dropped."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if _SECRET_KEY.search(str(key)):
            log.warning("not tracking parameter %r: it looks like a credential", name)
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = json.dumps(value, default=str) if not isinstance(value, str) else value
    return flat


def config_digest(config: Mapping[str, Any]) -> str:
    """The first 8 hex digits of the SHA-256 of the configuration as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(model: str, config: Mapping[str, Any], start: dt.date, end: dt.date) -> str:
    """``<model>-<config hash>-<start>..<end>``: what was trained, how, on which dates."""
    return f"{model}-{config_digest(config)}-{start.isoformat()}..{end.isoformat()}"


@contextmanager
def tracked_run(tracker: Tracker) -> Iterator[Tracker]:
    """End ``tracker``'s run on leaving the block: ``FINISHED``, ``FAILED`` on an exception,
    ``KILLED`` on an interrupt or exit; the exception itself propagates unchanged."""
    try:
        yield tracker
    except (KeyboardInterrupt, SystemExit):
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")


def _finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """Defined metrics only: an undefined one (None, NaN) is left out rather than faked."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


class JsonTracker:
    """Appends one JSON object per call to a JSON-lines file.

    Records: ``{"type": "params", "params": {...}}``, ``{"type": "metrics", "step": n,
    "time": unix_s, "metrics": {...}}`` (undefined values as null), ``{"type": "artifact",
    "path": ...}``, ``{"type": "finish", "status": ...}``.
    """

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._run_id = run_id or self.path.stem

    @property
    def run_id(self) -> str:
        return self._run_id

    def _write(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._write({"type": "params", "params": flatten_params(params)})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        values = {
            k: (float(v) if v is not None and math.isfinite(float(v)) else None)
            for k, v in metrics.items()
        }
        self._write({"type": "metrics", "step": int(step), "time": time.time(), "metrics": values})

    def log_artifact(self, path: Path) -> None:
        self._write({"type": "artifact", "path": str(Path(path).resolve())})

    def finish(self, status: str = "FINISHED") -> None:
        self._write({"type": "finish", "status": status})

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every record written so far (optionally only one ``type``)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if kind is None or r["type"] == kind]


class MlflowTracker:
    """One MLflow run, driven through ``MlflowClient`` (no process-global active run).

    With a ``sqlite:///…/mlflow.db`` URI and no ``artifact_location``, artifacts go to
    ``mlartifacts/`` beside the database (MLflow would otherwise use ``./mlruns`` of the
    current directory). ``mlflow`` is imported here, lazily: it is slow to import and the
    rest of the trainer does not need it.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        *,
        artifact_location: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is not None:  # resume logging into an existing run
            self._run_id = self._client.get_run(run_id).info.run_id
            return
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_location or _local_artifact_location(tracking_uri)
            experiment_id = self._client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        run = self._client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        self._run_id = run.info.run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        self._client.log_batch(
            self._run_id,
            params=[Param(k, v[:_MLFLOW_PARAM_LIMIT]) for k, v in sorted(flat.items())],
        )

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = _finite(metrics)
        if values:
            self._client.log_batch(
                self._run_id,
                metrics=[Metric(k, v, now, int(step)) for k, v in sorted(values.items())],
            )

    def log_artifact(self, path: Path) -> None:
        self._client.log_artifact(self._run_id, str(path))

    def set_tag(self, key: str, value: str) -> None:
        self._client.set_tag(self._run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self._run_id, status)


def _local_artifact_location(tracking_uri: str) -> str | None:
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None  # a tracking server decides its own artifact store
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.resolve().parent / "mlartifacts").as_uri()


class MultiTracker:
    """Fans every call out to several trackers; ``run_id`` is the first tracker's."""

    def __init__(self, trackers: Iterable[Tracker]) -> None:
        self.trackers = list(trackers)
        if not self.trackers:
            raise ValueError("MultiTracker needs at least one tracker")

    @property
    def run_id(self) -> str:
        return self.trackers[0].run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_artifact(self, path: Path) -> None:
        for tracker in self.trackers:
            tracker.log_artifact(path)

    def finish(self, status: str = "FINISHED") -> None:
        for tracker in self.trackers:
            tracker.finish(status)

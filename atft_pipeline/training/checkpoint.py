"""Checkpoint files: atomic writes, safe loads, RNG capture, and the model round trip.

Three kinds live in a run directory:

* ``best_<phase>.pt`` — the weights of a phase's best validation epoch plus everything needed
  to rebuild and use the model (model config, phase, the panel's feature columns, window,
  graph settings and normalization-stats hash);
* ``ensemble.pt`` — with ``training.ensemble_members`` > 1, in the directory above the
  members' run directories: every member's best weights and phase, and the shared metadata;
* ``last.pt`` — written after every epoch: the same plus optimizer, LR schedule, the RNG
  states of torch / numpy / python and the trainer's progress (phase index, epoch, early
  stopping counters, history). Resuming from it continues bit-for-bit on CPU.

Files are written to a temporary name and renamed, so a kill mid-write never leaves a
truncated checkpoint behind. Payloads hold only tensors and plain Python values, so they load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atft_pipeline.model.atft_gat_fan import ATFTGATFAN
from atft_pipeline.model.config import ModelConfig
from atft_pipeline.model.ensemble import ATFTEnsemble

CHECKPOINT_VERSION = 1
LAST = "last.pt"
ENSEMBLE = "ensemble.pt"
ENSEMBLE_MEMBERS = "members"


def best_name(phase: str) -> str:
    return f"best_{phase}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"version": CHECKPOINT_VERSION, **payload}, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has version {payload.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    return payload


def load_model(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[ATFTGATFAN | ATFTEnsemble, dict[str, Any]]:
    """Rebuild the model of a checkpoint in its phase (an ensemble checkpoint: every member in
    its own phase), in eval mode; returns it with the payload."""
    payload = load_checkpoint(path, map_location=device)
    config = ModelConfig.model_validate(payload["model_config"])

    def member(phase: str, weights: dict[str, Any]) -> ATFTGATFAN:
        model = ATFTGATFAN(config, phase=phase)
        model.load_state_dict(weights)
        return model

    if ENSEMBLE_MEMBERS in payload:
        model: ATFTGATFAN | ATFTEnsemble = ATFTEnsemble(
            [member(m["phase"], m["model"]) for m in payload[ENSEMBLE_MEMBERS]]
        )
    else:
        model = member(payload["phase"], payload["model"])
    return model.to(device).eval(), payload


def ensemble_payload(members: list[dict[str, Any]]) -> dict[str, Any]:
    """An ensemble checkpoint's payload from its members' best-checkpoint payloads: the
    members' shared metadata (model config, feature columns, window, graph, stats hash), and
    per member its seed, phase, epoch, validation metric and weights (the caller adds the
    ensemble's own training configuration)."""
    shared = ("model_config", "feature_columns", "stats_hash", "window", "graph", "horizons")
    first = members[0]
    for key in shared:
        if any(m[key] != first[key] for m in members[1:]):
            raise ValueError(f"ensemble members differ in {key}; they must share it")
    return {
        **{key: first[key] for key in shared},
        "phase": "ensemble",
        ENSEMBLE_MEMBERS: [
            {
                "seed": m["training_config"]["seed"],
                "phase": m["phase"],
                "epoch": m["epoch"],
                "metric": m["metric"],
                "model": m["model"],
            }
            for m in members
        ],
    }


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and initialised CUDA devices), numpy and python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].cpu().numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

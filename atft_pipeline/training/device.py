"""Device choice, bf16 autocast and out-of-memory handling shared by training and prediction.

``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` is set in :func:`resolve_device`, the
first thing the trainer does, before anything in the trainer touches CUDA: the caching
allocator reads the variable once, at its first allocation, and expandable segments let it
grow blocks instead of fragmenting when batch shapes vary (every batch has a different number
of stocks). A value the user already exported is left alone. If some other code initialised
CUDA earlier in the process the setting may come too late; that is logged.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

CUDA_ALLOC_CONF = "expandable_segments:True"


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (must exist) or ``"auto"`` (CUDA when available)."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    if not torch.cuda.is_available():
        if name == "cuda":
            raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
        return torch.device("cpu")
    if torch.cuda.is_initialized():
        log.warning(
            "CUDA was initialised before the trainer; PYTORCH_CUDA_ALLOC_CONF=%s may not apply",
            os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        )
    return torch.device("cuda")


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU runs stay float32)."""
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA OOM (``torch.cuda.OutOfMemoryError``) or another backend's "out of memory"."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def release_memory(device: torch.device) -> None:
    """Return cached blocks after an OOM (the failed step's tensors are already unreferenced)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of a CPU run (restored afterwards).

    Only on CPU: there it costs nothing measurable and makes a seeded run bit-reproducible;
    on CUDA the deterministic variants of scatter/index_add are much slower, so GPU runs are
    reproducible only up to floating-point summation order.
    """
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)

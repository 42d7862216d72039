"""Replay directories: recorded (or synthetic) J-Quants V2 answers stored on disk.

A replay directory is ``manifest.json`` plus one Parquet file per endpoint whose columns are
the V2 field names (DESIGN §4). The stand-in server serves it exactly like the live API, so
the whole pipeline can run on a recorded or real data set.

Writes are reproducible: identical tables give byte-identical files (fixed compression, rows
in a canonical order, no timestamps, sorted manifest keys), so two exports of the same seed
can be compared with ``cmp`` and a changed export shows up in a diff.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import to_jsonable_python

from atft_pipeline.errors import UsageError
from atft_pipeline.jquants.endpoints import ENDPOINTS, Endpoint, Plan
from atft_pipeline.jquants.parsing import coerce_frame

MANIFEST_NAME = "manifest.json"
REPLAY_FORMAT = "jquants-replay"
REPLAY_VERSION = 1
# zstd at a fixed level: deterministic output, and fast to read back (the real bars file,
# 1.79 M rows, loads in well under a second).
_COMPRESSION = "zstd"
_COMPRESSION_LEVEL = 3


class ReplayError(UsageError, ValueError):
    """A replay directory (or the tables written to one) is malformed."""


class ReplayManifest(BaseModel):
    """``manifest.json`` of a replay directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["jquants-replay"]
    version: Literal[1]
    api: Literal["v2"]
    endpoints: dict[str, str]
    start: dt.date | None = None
    end: dt.date | None = None
    source: str | None = None
    extra: dict[str, Any] | None = None

    @field_validator("endpoints")
    @classmethod
    def _known_endpoints_plain_files(cls, endpoints: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(endpoints) - set(ENDPOINTS))
        if unknown:
            raise ValueError(
                f"unknown J-Quants V2 endpoint(s) {unknown}; known: {sorted(ENDPOINTS)}"
            )
        for path, name in endpoints.items():
            # Files live directly in the replay directory; a path could escape it.
            if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".parquet"):
                raise ValueError(
                    f"file for endpoint {path!r} must be a plain '*.parquet' name inside the "
                    f"directory, got {name!r}"
                )
        return endpoints


def replay_file_name(endpoint: Endpoint) -> str:
    """``equities/bars/daily`` -> ``equities__bars__daily.parquet``."""
    return f"{endpoint.file_stem}.parquet"


def read_manifest(directory: str | os.PathLike[str]) -> ReplayManifest:
    """Load and validate ``manifest.json``; errors name the file and the offending field."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ReplayError(f"{path}: not found; a replay directory needs a {MANIFEST_NAME}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ReplayError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    try:
        return ReplayManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}"
            for err in exc.errors()
        )
        raise ReplayError(f"{path}: invalid replay manifest: {problems}") from None


def read_replay(
    directory: str | os.PathLike[str], plan: Plan = Plan.PREMIUM
) -> dict[str, pl.DataFrame]:
    """Read every endpoint of a replay directory, typed to the registry schema for ``plan``.

    Columns the file lacks are added as nulls (``coerce_frame``); a column that is not a V2
    field of its endpoint is an error, because it usually means V1 names or a wrong file.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    tables: dict[str, pl.DataFrame] = {}
    for path, name in sorted(manifest.endpoints.items()):
        endpoint = ENDPOINTS[path]
        file = directory / name
        if not file.is_file():
            raise ReplayError(
                f"{file}: listed in {MANIFEST_NAME} for endpoint {path!r} but missing"
            )
        try:
            frame = pl.read_parquet(file)
        except Exception as exc:  # polars raises several error types for corrupt files
            raise ReplayError(f"{file}: cannot read Parquet for endpoint {path!r}: {exc}") from exc
        check_columns(endpoint, frame, where=str(file))
        try:
            tables[path] = coerce_frame(endpoint, frame, plan)
        except Exception as exc:
            raise ReplayError(f"{file}: cannot coerce to the {path!r} schema: {exc}") from exc
    return tables


def write_replay(
    directory: str | os.PathLike[str],
    tables: Mapping[str, pl.DataFrame],
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tables`` (V2 path -> frame) as a replay directory and return its path.

    ``metadata`` may hold ``start``, ``end``, ``source`` and ``extra`` (any JSON-able dict,
    e.g. the synthetic market's summary). The directory is assembled in a sibling temp
    directory and renamed into place, so readers never see a half-written replay. An
    existing directory is replaced only with ``overwrite=True``.
    """
    directory = Path(directory)
    unknown = sorted(set(tables) - set(ENDPOINTS))
    if unknown:
        raise ReplayError(f"unknown J-Quants V2 endpoint(s) {unknown}; known: {sorted(ENDPOINTS)}")
    if directory.exists():
        if not overwrite:
            raise ReplayError(f"{directory}: already exists (pass overwrite=True to replace it)")
        # Replacing deletes the old directory: only ever do that to a replay directory.
        if not directory.is_dir() or (
            any(directory.iterdir()) and not (directory / MANIFEST_NAME).is_file()
        ):
            raise ReplayError(
                f"{directory}: exists and is not a replay directory (no {MANIFEST_NAME}); "
                "refusing to replace it"
            )
    manifest = _build_manifest(tables, metadata or {})
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        staging.chmod(0o755)  # mkdtemp creates 0700; a replay directory is meant to be shared
        for path in sorted(tables):
            endpoint = ENDPOINTS[path]
            frame = _canonical_frame(endpoint, tables[path])
            frame.write_parquet(
                staging / replay_file_name(endpoint),
                compression=_COMPRESSION,
                compression_level=_COMPRESSION_LEVEL,
                statistics=True,
            )
        (staging / MANIFEST_NAME).write_text(_manifest_json(manifest), encoding="utf-8")
        _replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _build_manifest(
    tables: Mapping[str, pl.DataFrame], metadata: Mapping[str, Any]
) -> ReplayManifest:
    allowed = {"start", "end", "source", "extra"}
    unexpected = sorted(set(metadata) - allowed)
    if unexpected:
        raise ReplayError(
            f"replay metadata keys {unexpected} are not manifest fields; use {sorted(allowed)} "
            "(put anything else under 'extra')"
        )
    fields = dict(metadata)
    if fields.get("extra") is not None:
        # Normalise to plain JSON types now so the manifest is validated as it will be read.
        fields["extra"] = json.loads(
            json.dumps(to_jsonable_python(fields["extra"]), sort_keys=True)
        )
    try:
        return ReplayManifest(
            format=REPLAY_FORMAT,
            version=REPLAY_VERSION,
            api="v2",
            endpoints={p: replay_file_name(ENDPOINTS[p]) for p in sorted(tables)},
            **fields,
        )
    except ValidationError as exc:
        raise ReplayError(f"invalid replay metadata: {exc}") from None


def _manifest_json(manifest: ReplayManifest) -> str:
    body = manifest.model_dump(mode="json", exclude_none=True)
    return json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def check_columns(endpoint: Endpoint, frame: pl.DataFrame, where: str) -> None:
    """Reject columns that are not V2 fields of ``endpoint`` (V1 names, typos, extras)."""
    unknown = [c for c in frame.columns if c not in endpoint.field_names]
    if unknown:
        raise ReplayError(
            f"{where}: columns {unknown} are not V2 fields of endpoint {endpoint.path!r} "
            f"(expected a subset of {endpoint.field_names})"
        )


def _canonical_frame(endpoint: Endpoint, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's registry columns, registry dtypes and registry order, rows sorted.

    Rows are sorted by the endpoint key, then by every other column, so the file does not
    depend on the order the producer happened to emit rows in.
    """
    check_columns(endpoint, frame, where=f"table for endpoint {endpoint.path!r}")
    present = [name for name in endpoint.field_names if name in frame.columns]
    typed = coerce_frame(endpoint, frame, Plan.PREMIUM).select(present)
    order = [c for c in endpoint.key if c in present] + [
        c for c in present if c not in endpoint.key
    ]
    return typed.sort(order, nulls_last=True, maintain_order=True) if order else typed


def _replace_directory(staging: Path, directory: Path) -> None:
    if not directory.exists():
        staging.rename(directory)
        return
    # Move the old directory aside first: rename cannot replace a non-empty directory.
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
    retired.rmdir()
    directory.rename(retired)
    try:
        staging.rename(directory)
    except BaseException:
        retired.rename(directory)
        raise
    shutil.rmtree(retired, ignore_errors=True)

"""The storage and J-Quants resources: writes that match the run's partitions, a key that
never shows, a client built from Settings alone, no server started behind anyone's back."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import build_init_resource_context

from atft_pipeline.jquants.client import DEFAULT_BASE_URL, ClientConfig
from atft_pipeline.jquants.endpoints import Plan
from atft_pipeline.sandbox import embedded
from atft_pipeline.settings import SANDBOX_API_KEY, Settings
from atft_pipeline.storage import PartitionStore
from resources.jquants import JQuantsResource
from resources.storage import StorageResource


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"code": [f"{i:04d}0" for i in range(n)], "x": [float(i) for i in range(n)]})


def test_write_output_writes_each_partition_and_reports_rows(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    written = storage.write_output("a", ["2024-01-04", "2024-01-05"], {"2024-01-04": _frame(2), "2024-01-05": _frame(3)})
    assert written["files"] == 2 and written["rows"] == 5
    store = PartitionStore(tmp_path)
    assert store.partitions("a") == ["2024-01-04", "2024-01-05"]
    assert store.read("a", "2024-01-05").height == 3
    storage.write_output("b", None, _frame(4))
    assert store.read("b").height == 4
    storage.write_output("c", ["2024-01-04"], _frame(1))  # one partition: a frame is enough
    assert store.read("c", "2024-01-04").height == 1


def test_write_output_refuses_partitions_other_than_the_runs(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    with pytest.raises(ValueError, match=r"asset 'a'.*missing \['2024-01-05'\].*unexpected \['2024-01-08'\]"):
        storage.write_output("a", ["2024-01-04", "2024-01-05"], {"2024-01-04": _frame(1), "2024-01-08": _frame(1)})
    with pytest.raises(TypeError, match="a run over 2 partitions"):
        storage.write_output("a", ["2024-01-04", "2024-01-05"], _frame(1))
    assert not PartitionStore(tmp_path).exists("a", "2024-01-04")


def test_resource_masks_the_key_and_builds_the_client_from_settings(tmp_path):
    settings = Settings(api_key="real-key-123", plan="standard", home=tmp_path)
    resource = JQuantsResource(settings=settings)
    assert "real-key-123" not in repr(resource)
    resource.setup_for_execution(build_init_resource_context())
    client = resource.client
    assert client.api_key.get_secret_value() == "real-key-123" and "real-key-123" not in repr(client)
    assert client.base_url == DEFAULT_BASE_URL and client.plan is Plan.STANDARD and client.rate_limited
    # Every other field is the client's own default, stated once in ClientConfig.
    defaults = ClientConfig()
    assert (client.timeout_s, client.max_retries) == (defaults.timeout_s, defaults.max_retries)


def test_stand_in_urls_are_not_paced_and_overrides_are_validated(tmp_path):
    settings = Settings(api_key=SANDBOX_API_KEY, base_url="http://127.0.0.1:9/v2/", home=tmp_path)
    assert settings.is_sandbox and not settings.embedded_sandbox
    assert settings.effective_plan is Plan.PREMIUM
    client = settings.client_config(max_retries=1)
    assert client.base_url == "http://127.0.0.1:9/v2" and not client.rate_limited and client.max_retries == 1
    with pytest.raises(ValueError, match="no_such_field"):
        settings.client_config(no_such_field=1)


def test_no_server_starts_until_the_embedded_sandbox_is_started(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path)
    assert settings.embedded_sandbox
    with pytest.raises(RuntimeError, match="start the embedded sandbox"):
        settings.client_config()
    started = []
    monkeypatch.setattr(embedded, "_servers", {})
    monkeypatch.setattr(embedded, "serve_sandbox_market", lambda *a: started.append(a) or _Handle())
    JQuantsResource(settings=settings)  # building the resource starts nothing
    assert started == []
    pointed = embedded.start_embedded_sandbox(settings)
    assert started == [(embedded.SANDBOX_SEED, embedded.SANDBOX_STOCKS)]
    assert pointed.base_url == _Handle.base_url and pointed.is_sandbox and not pointed.embedded_sandbox
    embedded.start_embedded_sandbox(settings)  # one server per market and process
    assert len(started) == 1


class _Handle:
    base_url = "http://127.0.0.1:1/v2"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

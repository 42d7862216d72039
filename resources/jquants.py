"""The J-Quants resource: the API client configuration for a run's steps, from ``Settings``.

The resource holds the one ``Settings`` object (the key stays a ``SecretStr``, masked in every
repr, and never enters run config). Without a key and a base URL the embedded sandbox market
is served in-process: that server is started explicitly, when a step sets the resource up.
"""

from typing import Any

from dagster import ConfigurableResource, InitResourceContext, ResourceDependency
from pydantic import Field, PrivateAttr

from atft_pipeline.jquants.client import ClientConfig
from atft_pipeline.sandbox.embedded import start_embedded_sandbox
from atft_pipeline.settings import Settings


class JQuantsResource(ConfigurableResource):
    """``client``: the ``ClientConfig`` of ``settings``, ready once a run step set it up."""

    settings: ResourceDependency[Settings]
    client_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="ClientConfig fields that differ from its defaults (tests against a "
        "stand-in server shorten the backoffs)",
    )
    _client: ClientConfig | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        settings = start_embedded_sandbox(self.settings) if self.settings.embedded_sandbox else self.settings
        self._client = settings.client_config(**self.client_overrides)

    @property
    def client(self) -> ClientConfig:
        if self._client is None:
            raise RuntimeError("JQuantsResource is not set up: use it inside a run step")
        return self._client

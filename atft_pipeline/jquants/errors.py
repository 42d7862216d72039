"""Typed errors of the J-Quants client.

Every error names the endpoint and the query it was raised for (never the API key, which only
ever travels in a request header). Errors that are usually about the subscription (401, 403,
and the 400 "Your subscription covers the following dates" window message) carry a hint that
names the configured plan and the endpoint's minimum plan from the registry, because a wrong
``JQUANTS_PLAN`` or an under-entitled account is by far the most common cause.
"""

from __future__ import annotations

from collections.abc import Mapping

from atft_pipeline.jquants.endpoints import Endpoint, Plan

# Fragments of the API's own messages that identify a failure's cause (JQUANTS_V2.md §3).
_PLAN_WINDOW_MESSAGE = "your subscription covers the following dates"
_NO_APPROVAL_MESSAGE = "no approval received"
_INVALID_KEY_MARKERS = ("api key", "token")


def describe_request(endpoint: str, params: Mapping[str, object]) -> str:
    """How errors and logs name a call: ``GET equities/bars/daily params={'date': '...'}``."""
    return f"GET {endpoint} params={dict(params)!r}"


class JQuantsError(Exception):
    """Base class of every error the J-Quants client raises."""


class JQuantsHTTPError(JQuantsError):
    """The API answered with a status the client does not (or no longer) retry."""

    def __init__(
        self,
        status: int,
        endpoint: str,
        params: Mapping[str, object],
        message: str,
        *,
        hint: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(status, endpoint, dict(params), message)
        self.status = status
        self.endpoint = endpoint
        self.params = dict(params)
        self.message = message
        self.hint = hint
        self.attempts = attempts

    def __str__(self) -> str:
        text = f"{describe_request(self.endpoint, self.params)} failed with {self.status}"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        text += f": {self.message}"
        if self.hint:
            text += f"{'' if text.endswith('.') else '.'} Hint: {self.hint}"
        return text


class BadRequestError(JQuantsHTTPError):
    """400: missing/invalid parameters, or dates outside the subscription's data window."""


class AuthError(JQuantsHTTPError):
    """401/403: the API key is missing, invalid or expired."""


class EntitlementError(JQuantsHTTPError):
    """403 (or "No approval received"): the subscription does not include this endpoint."""


class RateLimitError(JQuantsHTTPError):
    """429 after every retry was spent."""

    def __init__(
        self,
        status: int,
        endpoint: str,
        params: Mapping[str, object],
        message: str,
        *,
        hint: str = "",
        attempts: int = 1,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, endpoint, params, message, hint=hint, attempts=attempts)
        self.retry_after_s = retry_after_s


class ServerError(JQuantsHTTPError):
    """5xx after every retry was spent."""


class ResponseFormatError(JQuantsHTTPError):
    """A success status whose body is not a V2 envelope (truncated/invalid JSON, no ``data``)."""


class NetworkError(JQuantsError):
    """Timeouts or broken connections after every retry was spent (the httpx error is the cause)."""

    def __init__(self, endpoint: str, params: Mapping[str, object], message: str) -> None:
        super().__init__(endpoint, dict(params), message)
        self.endpoint = endpoint
        self.params = dict(params)
        self.message = message
        self.attempts = 1

    def __str__(self) -> str:
        return (
            f"{describe_request(self.endpoint, self.params)} failed after {self.attempts} "
            f"attempt(s): {self.message}"
        )


class PageLimitError(JQuantsError):
    """The response kept paginating past ``max_pages``; the result would have been truncated."""

    def __init__(self, endpoint: str, params: Mapping[str, object], max_pages: int) -> None:
        super().__init__(endpoint, dict(params), max_pages)
        self.endpoint = endpoint
        self.params = dict(params)
        self.max_pages = max_pages

    def __str__(self) -> str:
        return (
            f"{describe_request(self.endpoint, self.params)} still returned a pagination_key "
            f"after {self.max_pages} pages (max_pages); narrow the query (e.g. date= instead of "
            f"a from/to range) or raise max_pages"
        )


def plan_hint(endpoint: Endpoint, plan: Plan) -> str:
    """Configured plan vs. the endpoint's minimum plan, as one sentence."""
    if plan.covers(endpoint.plan):
        return (
            f"The configured plan is '{plan}' and {endpoint.path} needs '{endpoint.plan}' or "
            f"higher; if the account's subscription is lower than configured, fix JQUANTS_PLAN."
        )
    return (
        f"The configured plan '{plan}' does not include {endpoint.path}, which needs "
        f"'{endpoint.plan}' or higher."
    )


def _window_hint(endpoint: Endpoint, plan: Plan) -> str:
    reach = f"about {plan.history_years:g} years of history"
    if plan is Plan.FREE:
        reach += ", ending 12 weeks before today"
    return (
        f"The requested dates are outside the subscription's data window (plan '{plan}' "
        f"covers {reach}); request dates inside it. {plan_hint(endpoint, plan)}"
    )


def _auth_hint(endpoint: Endpoint, plan: Plan, has_key: bool) -> str:
    key = (
        "The API key was rejected: check JQUANTS_API_KEY (V2 keys are issued on the J-Quants "
        "dashboard; V1 tokens do not work on V2)."
        if has_key
        else "No API key is configured: set JQUANTS_API_KEY."
    )
    return f"{key} {plan_hint(endpoint, plan)}"


def _params_hint(endpoint: Endpoint) -> str:
    hint = f"{endpoint.path} accepts {list(endpoint.params)}"
    if endpoint.required_any:
        hint += f" and needs at least one of {list(endpoint.required_any)}"
    return hint + "."


def error_for_status(
    status: int,
    endpoint: Endpoint,
    params: Mapping[str, object],
    message: str,
    *,
    plan: Plan,
    has_key: bool,
    retry_after_s: float | None = None,
) -> JQuantsHTTPError:
    """The typed error for a response status other than success.

    ``retry_after_s`` is the response's ``Retry-After`` (J-Quants sends none; others might).
    """
    lowered = message.lower()
    args = (status, endpoint.path, params, message)
    if _NO_APPROVAL_MESSAGE in lowered:
        return EntitlementError(*args, hint=plan_hint(endpoint, plan))
    if status == 400:
        if _PLAN_WINDOW_MESSAGE in lowered:
            return BadRequestError(*args, hint=_window_hint(endpoint, plan))
        return BadRequestError(*args, hint=_params_hint(endpoint))
    invalid_key = any(marker in lowered for marker in _INVALID_KEY_MARKERS)
    if status == 401 or (status == 403 and (invalid_key or not has_key)):
        return AuthError(*args, hint=_auth_hint(endpoint, plan, has_key))
    if status == 403:
        return EntitlementError(*args, hint=plan_hint(endpoint, plan))
    if status == 429:
        return RateLimitError(*args, retry_after_s=retry_after_s)
    if status >= 500:
        return ServerError(*args)
    return JQuantsHTTPError(*args)

"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the server reports goes through :class:`ApiError`, so that clients (the
``openai`` package among them) always get a JSON body they can parse, never an HTML page or a
dropped connection.
"""

from __future__ import annotations

from ..errors import ConfigError, ConstraintError, ModelError

STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body.

    Args:
        status: the HTTP status code.
        message: what went wrong, for a person.
        param: the request field at fault, if one is.
        code: a short machine-readable reason (``"invalid_regex"``, ``"limit_exceeded"``...).
        type: OpenAI's error type; derived from ``status`` when not given.
    """

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def as_api_error(err: BaseException) -> ApiError:
    """What a failed generation answers: the client's fault (400) or the server's (500)."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, ConfigError):
        return ApiError(400, str(err), code="invalid_request")
    if isinstance(err, ModelError):
        return ApiError(400, str(err), code="model_error")
    if isinstance(err, ConstraintError):
        return ApiError(500, f"the constraint failed: {err}", code="constraint_error")
    return server_error(err)


def server_error(err: BaseException) -> ApiError:
    """A 500 that names the exception, for a failure that is not the request's fault."""
    return ApiError(500, f"internal error while generating: {type(err).__name__}: {err}", code="internal_error")

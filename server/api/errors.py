"""OpenAI-style error bodies, and the handlers that turn every failure into one.

Every error a client can see has the shape `{"error": {"message", "type", "param", "code"}}`.
Bad requests (schema or value errors) are 400, never FastAPI's default 422, so that clients see
one status for every invalid request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.response_schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
OVERLOADED = "overloaded_error"


class APIError(Exception):
    """An error with the status, OpenAI error type, parameter and code a client should see."""

    def __init__(
        self,
        message: str,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers

    def to_body(self) -> ErrorResponse:
        detail = ErrorDetail(
            message=self.message, type=self.error_type, param=self.param, code=self.code
        )
        return ErrorResponse(error=detail)

    def to_response(self) -> JSONResponse:
        return JSONResponse(
            self.to_body().model_dump(mode="json"),
            status_code=self.status,
            headers=self.headers,
        )


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(message, param=param, code=code)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise to an OpenAI-style response.

    Unexpected exceptions are caught by `InternalErrorMiddleware`, not by an `Exception` handler:
    Starlette answers those from its outermost middleware and then re-raises, which makes the
    server drop the connection, so a keep-alive client's next request would fail too.
    """
    app.add_exception_handler(APIError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_middleware(InternalErrorMiddleware)


async def _handle_api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return error.to_response()


async def _handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return validation_error(error.errors()).to_response()


async def _handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = HTTPStatus(error.status_code)
    error_type = INVALID_REQUEST if status < HTTPStatus.INTERNAL_SERVER_ERROR else SERVER_ERROR
    code = status.phrase.lower().replace(" ", "_")
    api_error = APIError(str(error.detail), status, error_type, code=code, headers=error.headers)
    return api_error.to_response()


def internal_error() -> APIError:
    return APIError(
        "the server hit an internal error; it has been logged",
        HTTPStatus.INTERNAL_SERVER_ERROR,
        SERVER_ERROR,
        code="internal_error",
    )


class InternalErrorMiddleware:
    """Answer an unexpected exception with an OpenAI-style 500, log it, keep the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            logger.exception("internal error serving %s %s", scope["method"], scope["path"])
            if started:
                raise  # part of the response is out: nothing consistent can follow
            await internal_error().to_response()(scope, receive, send)


def validation_error(errors: Sequence[Any]) -> APIError:
    """One 400 error from pydantic's error list, naming the first parameter that failed."""
    if not errors:
        return invalid_request("invalid request body")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return invalid_request(
            f"the body is not valid JSON: {first.get('msg')}", code="json_invalid"
        )
    param = _param_path(first.get("loc", ()))
    if param is None:
        if first.get("type") == "missing":
            return invalid_request("the request body is empty; send a JSON object")
        return invalid_request(f"the request body must be a JSON object: {first.get('msg')}")
    # A union field fails once per alternative: list what each alternative wanted.
    reasons = [e.get("msg") for e in errors if _param_path(e.get("loc", ())) == param]
    return invalid_request(f"{param}: {' or '.join(dict.fromkeys(reasons))}", param=param)


# pydantic names the alternative of a union that failed inside `loc` ("str", "list[int]",
# "TextPart"): request fields are snake_case and never named after a type, so those are skipped.
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")
PYTHON_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param_path(loc: Sequence[str | int]) -> str | None:
    """`("body", "messages", 0, "role")` -> `messages[0].role`; None for the body itself."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif FIELD_NAME.fullmatch(part) and part not in PYTHON_TYPE_TAGS:
            path += f".{part}" if path else part
    return path or None

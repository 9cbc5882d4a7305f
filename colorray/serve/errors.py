"""Errors of colorray's HTTP apps (the Serve app and the judge's page) as one JSON shape: ``{"error": message}``.

``RequestError`` is a request the app refuses, with its status; ``add_json_error_handlers`` answers it, FastAPI's
own HTTP errors and any unexpected exception (500, details only in the server's log) in that shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class RequestError(Exception):
    """A request the app refuses; answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def add_json_error_handlers(app: FastAPI, log_name: str) -> None:
    """Answer every error of ``app`` as ``{"error": ...}``; ``log_name`` names where a 500's details are."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if error.status_code == 404 else str(error.detail)
        return JSONResponse({"error": message}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        message = f"internal error: {type(error).__name__} (details in the {log_name} log)"
        return JSONResponse({"error": message}, status_code=500)

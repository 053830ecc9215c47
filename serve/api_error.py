"""The one client-error type: a request the server refuses, answered as an OpenAI-style 4xx body
``{"error": {"message", "type", "param", "code"}}`` whose message names the problem (400 unless ``status`` says
otherwise). Raised by the routes, the request limits (:mod:`serve.limits`) and the service (a model that refuses
the request); :mod:`serve.errors` turns it into the response."""

from __future__ import annotations


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

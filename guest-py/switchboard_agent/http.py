"""Outbound HTTP(S) to the hosts the manifest allows (no redirects, 10 s, 1 MiB)."""

import json as _json

from wit_world.imports import http as _http

from ._errors import host_call


class Response:
    def __init__(self, raw):
        self.status = raw.status
        self.headers = raw.headers
        self.body = raw.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return _json.loads(self.body)


def fetch(method: str, url: str, headers=None, body=b"", json=None) -> Response:
    """Raises `NotAllowed` for a host the manifest does not list, `Unavailable` on failure."""
    headers = list(headers.items() if isinstance(headers, dict) else headers or [])
    if json is not None:
        body = _json.dumps(json).encode("utf-8")
        headers.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    request = _http.Request(method=method, url=url, headers=headers, body=bytes(body))
    return Response(host_call(_http.fetch, request))


def get(url: str, headers=None) -> Response:
    return fetch("GET", url, headers)


def post(url: str, json=None, headers=None, body=b"") -> Response:
    return fetch("POST", url, headers, body, json)

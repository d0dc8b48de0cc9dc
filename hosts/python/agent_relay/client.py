"""A client for a served relay (`agent-relay serve`) with the same methods as `Relay`: the routes
come from the server's own `/v1/openapi.json` (operationId = export name), so `call(export,
args)` takes the same JSON as in-process."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from .relay import Helpers, RelayError


def _query_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


class RelayClient(Helpers):
    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        document = self._request("GET", "/v1/openapi.json", None, {}, None)
        self.operations = {}
        for path, methods in document["paths"].items():
            for method, op in methods.items():
                self.operations.setdefault(op["operationId"], (method.upper(), path, op.get("parameters", [])))

    def _request(self, method, path, body, headers, bearer):
        data = None if body is None else json.dumps(body).encode()
        headers = dict(headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                text = answer.read()
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read())["error"]
                raise RelayError(detail["code"], error.code, detail["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise RelayError("internal", error.code, f"{method} {path}: HTTP {error.code}") from None
        except urllib.error.URLError as error:
            raise RelayError("unavailable", 503, f"cannot reach {self.url}: {error.reason}") from None
        return json.loads(text) if text.strip() else None

    def call(self, export: str, args: dict | None = None, *, bearer: str | None = None, caller="operator"):
        if export not in self.operations:
            raise RelayError("not_found", 404, f"the served relay has no route for {export}")
        method, path, parameters = self.operations[export]
        args = dict(args or {})
        query = dict(args.pop("query", None) or {})
        headers = {}
        for p in parameters:
            name = p["name"]
            if p["in"] == "path":
                if name not in args:
                    raise RelayError("invalid", 400, f"{name} is required")
                path = path.replace("{" + name + "}", urllib.parse.quote(str(args.pop(name)), safe=""))
            elif p["in"] == "header" and name in args:
                headers[name] = str(args.pop(name))
        body = args.pop("input", None)
        if args:
            body = {**(body or {}), **args}
        if query:
            path += "?" + urllib.parse.urlencode({k: _query_value(v) for k, v in query.items()})
        token = bearer if bearer is not None else (self.token if caller == "operator" else None)
        return self._request(method, path, body, headers, token)

"""Helpers for Weft steps written in Python (componentize-py, world `weft:step/step@0.2.0`).

A step is a function from the parsed input to a JSON-serialisable result:

    from weft_step import StepError, http_request, info, secret, step

    def run(input):
        ...
        return {"ok": True}

    WitWorld = step(run)

componentize-py looks for the class `WitWorld` in the app module; `step`
builds it.
"""

import json
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, outgoing_handler, secrets, streams
from wit_world.imports import wasi_http_types as http
from wit_world.imports import weft_step_types

__all__ = [
    "StepError",
    "Response",
    "step",
    "invocation",
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "secret",
    "http_request",
    "url_for_log",
]


class StepError(Exception):
    """The error a step returns: `code` is machine-readable, e.g. "bad_input"."""

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def step(fn: Callable[[Any], Any]) -> type:
    """The `WitWorld` class whose `run` export parses the input, calls `fn` and serialises its result.

    A `StepError` raised by `fn` becomes the WIT `step-error`; any other
    exception traps the step (as a panic does in Rust) and its traceback goes
    to the step's log.
    """

    class WitWorld(wit_world.WitWorld):
        def run(self, input: str) -> str:
            try:
                value = json.loads(input)
            except ValueError as e:
                raise _wit_error(StepError("bad_input", f"the input is not JSON: {e}"))
            try:
                output = fn(value)
            except StepError as e:
                raise _wit_error(e)
            try:
                # allow_nan=False: NaN and Infinity are not JSON.
                return json.dumps(output, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise _wit_error(StepError("bad_output", f"the output is not JSON: {e}"))

    return WitWorld


def _wit_error(e: StepError) -> Err:
    return Err(weft_step_types.StepError(code=e.code, message=e.message, retryable=e.retryable))


def invocation() -> host.Invocation:
    """`tenant`, `run_id`, `step_id` and `attempt` (from 1) of the running call."""
    return host.current_invocation()


_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "error": host.Level.ERROR,
}


def log(level: str, message: str) -> None:
    """One record in the step's log; `level` is trace, debug, info, warn or error."""
    host.log(_LEVELS[level], message)


def trace(message: str) -> None:
    host.log(host.Level.TRACE, message)


def debug(message: str) -> None:
    host.log(host.Level.DEBUG, message)


def info(message: str) -> None:
    host.log(host.Level.INFO, message)


def warn(message: str) -> None:
    host.log(host.Level.WARN, message)


def error(message: str) -> None:
    host.log(host.Level.ERROR, message)


def secret(name: str) -> Optional[str]:
    """The secret's value, or None when the step's document does not grant `name`."""
    return secrets.get(name)


# --- outgoing HTTP over wasi:http -------------------------------------------

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
# wasi:io streams take at most 4096 bytes per blocking write.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024


class Response:
    """A finished HTTP exchange: the last hop's status, headers and whole body."""

    def __init__(self, url: str, status: int, headers: List[Tuple[str, bytes]], body: bytes):
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; a `bad_response` StepError when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise StepError("bad_response", f"{url_for_log(self.url)} answered {self.status} with a body that is not JSON: {e}")

    def raise_for_status(self) -> "Response":
        """This response when its status is 2xx, else an `http_error` StepError (retryable for 5xx)."""
        if not 200 <= self.status < 300:
            raise StepError(
                "http_error",
                f"{url_for_log(self.url)} answered {self.status}",
                retryable=self.status >= 500,
            )
        return self


def url_for_log(url: str) -> str:
    """`url` without user info, query or fragment, which may carry credentials."""
    parts = urlsplit(url)
    authority = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{authority}{parts.path}"


def http_request(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
    follow_redirects: bool = True,
) -> Response:
    """Sends a request through the host and reads the whole response.

    Follows up to five redirects, each a new request that the host checks
    against the allowed hosts; `Authorization` goes only to the origin it was
    given for. Any status comes back as a `Response`; a request that gets no
    response (refused by the host, connection failed, ...) raises an
    `http_error` StepError, retryable unless the host denied it.
    """
    method = method.upper()
    headers = dict(headers or {})
    first = url
    for _ in range(MAX_REDIRECTS + 1):
        response = _send(method, url, headers, body)
        location = response.header("location")
        if not follow_redirects or response.status not in _REDIRECTS or location is None:
            return response
        target = urljoin(url, location)
        if _origin(target) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        # As browsers do: 303, and 301/302 after a POST, go on as a GET without body.
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method = "HEAD" if method == "HEAD" else "GET"
            body = None
            headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
        url = target
    raise StepError("http_error", f"{url_for_log(first)}: more than {MAX_REDIRECTS} redirects")


def _origin(url: str) -> Tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


def _send(method: str, url: str, headers: Dict[str, str], body: Optional[bytes]) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StepError("bad_input", f"not an http(s) URL: {url_for_log(url)}")
    entries = [(k, v.encode("utf-8")) for k, v in headers.items()]
    if body is not None:
        entries.append(("content-length", str(len(body)).encode()))
    try:
        fields = http.Fields.from_list(entries)
    except Err as e:
        raise StepError("bad_input", f"a request header is not allowed: {_describe(e.value)}")

    request = http.OutgoingRequest(fields)
    request.set_method(_method(method))
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc.rpartition("@")[2])
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body()

    def transport_error(code: Any) -> StepError:
        denied = isinstance(code, http.ErrorCode_HttpRequestDenied)
        return StepError(
            "http_error",
            f"{method} {url_for_log(url)} failed: {_describe(code)}",
            retryable=not denied,
        )

    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        outgoing.__exit__(None, None, None)
        raise transport_error(e.value)
    # The body is written after `handle` so the host can stream it out.
    try:
        with outgoing.write() as stream:
            for start in range(0, len(body or b""), _WRITE_CHUNK):
                stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
        http.OutgoingBody.finish(outgoing, None)
    except Err:
        pass  # the response future below says why the body could not go out

    with future:
        # The poll loop: wait until the response (or its error) is there.
        while (result := future.get()) is None:
            with future.subscribe() as ready:
                ready.block()
    inner = result.value  # the outer result only says whether `get` was called twice
    if isinstance(inner, Err):
        raise transport_error(inner.value)
    with inner.value as response:
        status = response.status()
        with response.headers() as fields:
            response_headers = fields.entries()
        with response.consume() as incoming:
            data = _read_all(incoming, transport_error)
    return Response(url, status, response_headers, data)


def _read_all(incoming: http.IncomingBody, transport_error: Callable[[Any], StepError]) -> bytes:
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(_READ_CHUNK))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                with e.value.value as io_error:
                    code = http.http_error_code(io_error)
                    raise transport_error(code if code is not None else io_error.to_debug_string())
    return b"".join(chunks)


def _method(name: str) -> Any:
    known = {
        "GET": http.Method_Get,
        "HEAD": http.Method_Head,
        "POST": http.Method_Post,
        "PUT": http.Method_Put,
        "DELETE": http.Method_Delete,
        "OPTIONS": http.Method_Options,
        "PATCH": http.Method_Patch,
    }
    return known[name]() if name in known else http.Method_Other(name)


# The WIT spelling of error-code cases, e.g. ErrorCode_HttpRequestDenied -> HTTP-request-denied.
_ACRONYMS = {"dns": "DNS", "tls": "TLS", "ip": "IP", "http": "HTTP", "uri": "URI"}


def _describe(code: Any) -> str:
    if isinstance(code, str):
        return code
    name = type(code).__name__.partition("_")[2] or type(code).__name__
    words, word = [], ""
    for ch in name:
        if ch.isupper() and word:
            words.append(word)
            word = ""
        word += ch.lower()
    words.append(word)
    text = "-".join(_ACRONYMS.get(w, w) for w in words)
    value = getattr(code, "value", None)
    return f"{text} ({value})" if value is not None else text

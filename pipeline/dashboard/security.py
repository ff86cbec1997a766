"""Who may see the dashboard and who may act through it.

- Auth: with a token configured, every request but the login form and the static assets
  carries it, as `Authorization: Bearer <token>` (scripts) or as the session cookie the
  login form sets (browsers). The cookie holds an HMAC of the token, not the token, and
  both are compared in constant time.
- CSRF: every POST from a browser carries the value of the `agentic_csrf` cookie in its
  form field `csrf` or its `X-CSRF-Token` header (double submit; the cookie is HttpOnly and
  SameSite=Strict, so another site can neither read nor send it). A request with a bearer
  token needs none: a browser never adds that header on its own.
- Headers: a Content-Security-Policy that allows only our own scripts and styles (no
  inline script runs, so a payload that slips into a page cannot execute), no framing,
  no sniffing, no referrer to other sites, no caching of pages.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "Guard",
    "is_loopback",
]

SESSION_COOKIE = "agentic_session"
CSRF_COOKIE = "agentic_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
OPEN_PATHS = ("/static/", "/login", "/healthz")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chromium send Origin: null
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether `host` (what the server binds) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """The auth and CSRF checks, and the cookies and headers that go with them."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._session = _session_value(token) if token else None

    # -- auth ----------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self.token is None or request.url.path.startswith(OPEN_PATHS):
            return True
        return self.bearer(request) or self._cookie_ok(request)

    def bearer(self, request: Request) -> bool:
        """Whether the request carries the token in an Authorization header."""
        if self.token is None:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and _same(given.strip(), self.token)

    def _cookie_ok(self, request: Request) -> bool:
        given = request.cookies.get(SESSION_COOKIE, "")
        return self._session is not None and _same(given, self._session)

    def token_matches(self, given: str) -> bool:
        return self.token is not None and _same(given, self.token)

    def start_session(self, response: Response, request: Request) -> None:
        assert self._session is not None
        response.set_cookie(
            SESSION_COOKIE,
            self._session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # -- CSRF ----------------------------------------------------------------------------

    @staticmethod
    def csrf_token(request: Request) -> str:
        """This browser's CSRF value: its cookie's, or a new one (set by `finish`)."""
        existing = request.cookies.get(CSRF_COOKIE, "")
        if len(existing) == 43:  # token_urlsafe(32)
            return existing
        token: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
        request.state.new_csrf = token
        return token

    async def csrf_ok(self, request: Request) -> bool:
        """Whether a POST may act: a bearer token, or the CSRF value echoed back from a
        page of this dashboard (and, when the browser says where it comes from, from
        this origin)."""
        if self.bearer(request):
            return True
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            return False
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get(CSRF_HEADER, "")
        if not given and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            value = form.get(CSRF_FIELD, "")
            given = value if isinstance(value, str) else ""
        return bool(cookie) and _same(given, cookie)

    @staticmethod
    def finish(request: Request, response: Response) -> Response:
        """Add the security headers, and the CSRF cookie when this request made one."""
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        new = getattr(request.state, "new_csrf", "")
        if new:
            response.set_cookie(
                CSRF_COOKIE,
                new,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def middleware(
        self, refuse: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
        """An http middleware: `refuse(request)` answers requests that are not authorized."""

        async def guard(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if not self.authorized(request):
                return self.finish(request, await refuse(request))
            return self.finish(request, await call_next(request))

        return guard


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"agentic-dashboard-session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())

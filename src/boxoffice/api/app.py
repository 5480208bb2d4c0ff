"""The HTTP API: a FastAPI app over the services, deployable to Cloud Run.

Entry points stay thin: parse and check the request (pydantic), find the caller (a verified
Firebase ID token, ``auth``), call one service function, map its result or named error to a
response (``problems``). Each resource is one router module under ``routes/``; a new one is one
line in ``ROUTERS``. The storefront and dashboard pages are static files served at /app/ (``web``).

Run it: ``boxoffice serve`` (dev stack), or ``uvicorn boxoffice.api.app:create_app --factory``
(Cloud Run: GOOGLE_CLOUD_PROJECT set, no emulator variables). In production (``BOXOFFICE_PRODUCTION=1``,
set by ``serve --production``, or on Cloud Run, which sets ``K_SERVICE``) the app refuses to start
while any ``*_EMULATOR_HOST`` variable is set: firebase-admin would then accept unsigned tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api import problems, web
from boxoffice.api.auth import FirebaseTokenVerifier, TokenVerifier
from boxoffice.api.ratelimit import RateLimiter, RateLimits
from boxoffice.api.routes import dashboard, events, holds, orders, purchases, sales, waitlist

ROUTERS = [
    events.router,
    purchases.router,
    orders.router,
    holds.router,
    waitlist.router,
    sales.router,
    dashboard.router,
]

MAX_BODY_BYTES = 16 * 1024  # the largest valid body (an event) is well under 1 KiB


class BodySizeLimit:
    """Refuse a request body over ``limit`` bytes with 413, declared or streamed (pure ASGI).

    The body is read in full (at most ``limit`` bytes) before the app sees the request, then
    handed to it: an error raised while the app itself reads would reach FastAPI's body parser,
    which answers any such error with a 400.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        response = problems.problem_response(
            413, "request_too_large", f"the request body must be at most {self.limit} bytes")
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class ProductionMisconfigured(RuntimeError):
    """Production was asked for with emulator variables set: refused before serving anything."""


def production_requested(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("BOXOFFICE_PRODUCTION") == "1" or bool(env.get("K_SERVICE"))


def emulator_variables(env: Mapping[str, str] = os.environ) -> list[str]:
    """The set ``*_EMULATOR_HOST`` variables: each points a Google client library at an emulator
    (the Auth one makes firebase-admin accept unsigned tokens)."""
    return sorted(k for k, v in env.items() if k.endswith("_EMULATOR_HOST") and v)


def require_no_emulators(env: Mapping[str, str] = os.environ) -> None:
    found = emulator_variables(env)
    if found:
        raise ProductionMisconfigured(
            f"production mode with emulator variables set ({', '.join(found)}): unset them; with "
            "FIREBASE_AUTH_EMULATOR_HOST set, unsigned ID tokens would be accepted")


def create_app(db: Any = None, verify_token: TokenVerifier | None = None,
               project: str | None = None, rate_limits: RateLimits | None = None) -> FastAPI:
    """Build the app. Defaults: a Firestore client and a Firebase token verifier for
    ``GOOGLE_CLOUD_PROJECT`` (the emulators when their env vars are set), rate limits from the
    environment (``ratelimit.RateLimits.from_env``). Raises ``ProductionMisconfigured``."""
    if production_requested():
        require_no_emulators()
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "demo-boxoffice"
    if db is None:
        from google.cloud import firestore

        db = firestore.Client(project=project)
    app = FastAPI(
        title="boxoffice",
        version="1.0.0",
        description="Event ticketing: events, purchases, holds, orders, waitlists. Sign in with "
                    "Firebase Authentication and send `Authorization: Bearer <ID token>`. Errors are "
                    "`application/problem+json`.",
    )
    app.state.db = db
    app.state.rate_limiter = RateLimiter(rate_limits or RateLimits.from_env())
    app.state.verify_token = verify_token or FirebaseTokenVerifier(
        project, check_revoked=os.environ.get("BOXOFFICE_CHECK_REVOKED", "1") != "0")
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)

    web.install(app, project)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit)
    return app

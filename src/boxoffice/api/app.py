"""The HTTP API: a FastAPI app over the services, deployable to Cloud Run.

Entry points stay thin: parse and check the request (pydantic), find the caller (a verified
Firebase ID token, ``auth``), call one service function, map its result or named error to a
response (``problems``). Each resource is one router module under ``routes/``; a new one is one
line in ``ROUTERS``. The storefront and dashboard pages are static files served at /app/ (``web``).

Run it: ``boxoffice serve`` (dev stack), or ``uvicorn boxoffice.api.app:create_app --factory``
(Cloud Run: GOOGLE_CLOUD_PROJECT set, no emulator variables).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api import problems, web
from boxoffice.api.auth import FirebaseTokenVerifier, TokenVerifier
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
    """Refuse a request body over ``limit`` bytes with 413, declared or streamed (pure ASGI)."""

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
        seen = 0
        too_big = False

        async def limited() -> Message:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = problems.problem_response(
            413, "request_too_large", f"the request body must be at most {self.limit} bytes")
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_app(db: Any = None, verify_token: TokenVerifier | None = None,
               project: str | None = None) -> FastAPI:
    """Build the app. Defaults: a Firestore client and a Firebase token verifier for
    ``GOOGLE_CLOUD_PROJECT`` (the emulators when their env vars are set)."""
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
    app.state.verify_token = verify_token or FirebaseTokenVerifier(
        project, check_revoked=os.environ.get("BOXOFFICE_CHECK_REVOKED") == "1")
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)

    web.install(app, project)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit)
    return app

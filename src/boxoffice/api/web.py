"""The storefront and dashboard pages (static files under /app/) and the Firebase config they read.

The pages are built by esbuild from ``web/src`` into ``web/public/dist`` (``make web``); this
module only serves ``web/public`` and tells the page how to reach Firebase:

- locally, the emulators the API itself uses (``FIRESTORE_EMULATOR_HOST``,
  ``FIREBASE_AUTH_EMULATOR_HOST``) and the project id; the Auth emulator accepts any API key;
- in production, the project's web app config (``BOXOFFICE_FIREBASE_WEB_CONFIG``, the JSON object
  the Firebase console shows for a web app: apiKey, authDomain, appId, ...), and no emulators.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR_ENV = "BOXOFFICE_WEB_DIR"
WEB_CONFIG_ENV = "BOXOFFICE_FIREBASE_WEB_CONFIG"
# The organiser account `boxoffice serve` creates in the Auth emulator for the local dashboard.
DEMO_ORGANISER = {"email": "organiser@boxoffice.test", "password": "organiser"}

router = APIRouter(tags=["storefront"])


def web_dir() -> Path:
    """``web/public`` of the checkout (or ``BOXOFFICE_WEB_DIR``)."""
    explicit = os.environ.get(WEB_DIR_ENV)
    return Path(explicit) if explicit else Path(__file__).resolve().parents[3] / "web" / "public"


def client_config(project: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What the page needs to start the Firebase Web SDK (never a secret: a web API key is public)."""
    env = dict(os.environ) if env is None else env
    web = json.loads(env.get(WEB_CONFIG_ENV) or "{}")
    emulators = {
        name: env[var] for name, var in (("firestore", "FIRESTORE_EMULATOR_HOST"),
                                         ("auth", "FIREBASE_AUTH_EMULATOR_HOST")) if env.get(var)
    }
    firebase = {"projectId": project, "apiKey": "demo-api-key", "authDomain": f"{project}.firebaseapp.com"}
    firebase.update(web)
    config: dict[str, Any] = {"firebase": firebase, "emulators": emulators or None}
    if "auth" in emulators:
        config["demo_organiser"] = DEMO_ORGANISER
    return config


@router.get("/v1/client-config", include_in_schema=True)
def get_client_config(request: Request) -> dict[str, Any]:
    """The Firebase Web SDK config of this deployment (project, emulator hosts when local)."""
    return request.app.state.client_config  # type: ignore[no-any-return]


def install(app: FastAPI, project: str) -> None:
    """Serve the pages at /app/ (``/`` redirects there) and the config at /v1/client-config."""
    app.state.client_config = client_config(project)
    app.include_router(router)
    root = web_dir()

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/app/")

    # Mounted even before `make web` has built dist/: the page then says to build it (its script
    # tag's onerror), and a build made while the server runs is served without a restart.
    app.mount("/app", StaticFiles(directory=root, html=True), name="app")

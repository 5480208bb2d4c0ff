"""`boxoffice serve`: the HTTP API on uvicorn, against the dev stack (or a real project)."""

from __future__ import annotations

import os

import typer

from boxoffice.cli.output import EXIT_INPUT, EXIT_NO_EMULATOR
from boxoffice.runtime import auth_emulator
from boxoffice.runtime import emulators as em
from boxoffice.runtime.emulator_users import emulator_token, set_claims
from boxoffice.runtime.emulator_users import mint_tokens as mint


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8080, help="Port to listen on."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
    production: bool = typer.Option(False, "--production",
                                    help="Use GOOGLE_CLOUD_PROJECT's real Firestore and Firebase Auth."),
) -> None:
    """Serve the API. Without --production it needs `boxoffice dev up` (Firestore + Auth emulators)
    or the emulator variables set; OpenAPI at /docs and /openapi.json."""
    import uvicorn


    if not production:
        rec = em.recorded_stack()
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            if rec is None:
                typer.echo("No emulators: run `boxoffice dev up` first (or set FIRESTORE_EMULATOR_HOST "
                           "and FIREBASE_AUTH_EMULATOR_HOST), or pass --production.", err=True)
                raise typer.Exit(EXIT_NO_EMULATOR)
            os.environ["FIRESTORE_EMULATOR_HOST"] = rec.firestore_host
            os.environ.setdefault("GOOGLE_CLOUD_PROJECT", rec.project)
        if not os.environ.get(auth_emulator.ENV):
            auth = auth_emulator.recorded_auth_emulator()
            if auth is None:
                auth = auth_emulator.dev_up(os.environ.get("GOOGLE_CLOUD_PROJECT", "demo-boxoffice"))
            os.environ[auth_emulator.ENV] = auth.host
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "demo-boxoffice")
    elif not os.environ.get("GOOGLE_CLOUD_PROJECT"):
        typer.echo("--production needs GOOGLE_CLOUD_PROJECT", err=True)
        raise typer.Exit(EXIT_INPUT)
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    if not production:
        _prepare_local_pages(project)
    typer.echo(f"boxoffice API on http://{host}:{port} (project {project}, "
               f"auth {'emulator ' + os.environ[auth_emulator.ENV] if not production else 'Firebase'})",
               err=True)
    typer.echo(f"storefront: http://{host}:{port}/app/   dashboard: http://{host}:{port}/app/dashboard.html",
               err=True)
    from boxoffice.runtime import storefront

    storefront.record_url(f"http://{host}:{port}")
    try:
        uvicorn.run("boxoffice.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning")
    finally:
        storefront.forget_url()


def _prepare_local_pages(project: str) -> None:
    """What the pages need from the local emulators: firestore.rules enforced for them, and the
    demo organiser account the dashboard page names."""
    from boxoffice.api.web import DEMO_ORGANISER, web_dir
    from boxoffice.runtime import auth_emulator
    from boxoffice.runtime.emulator_users import ensure_organiser
    from boxoffice.runtime.emulators import load_rules

    load_rules(os.environ["FIRESTORE_EMULATOR_HOST"], project)
    ensure_organiser(os.environ[auth_emulator.ENV], project, DEMO_ORGANISER["email"], DEMO_ORGANISER["password"])
    if not (web_dir() / "dist").is_dir():
        typer.echo("The storefront is not built: run `make web` first (it needs `npm ci`).", err=True)


def mint_tokens(
    count: int = typer.Option(10, "--count", "-n", min=1, max=100_000, help="How many users."),
    prefix: str = typer.Option("sim", help="User ids are PREFIX-00000, PREFIX-00001, ..."),
    organiser: bool = typer.Option(False, help="Also create one organiser, printed first as PREFIX-org."),
) -> None:
    """Create users in the dev Auth emulator and print `uid<TAB>ID token` lines (emulator only)."""

    host = os.environ.get(auth_emulator.ENV) or getattr(auth_emulator.recorded_auth_emulator(), "host", None)
    if not host:
        typer.echo("No Auth emulator: run `boxoffice dev up` (or set FIREBASE_AUTH_EMULATOR_HOST).", err=True)
        raise typer.Exit(EXIT_NO_EMULATOR)

    rec = em.recorded_stack()
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or (rec.project if rec else "demo-boxoffice")
    if organiser:
        (uid, _), = mint(host, project, 1, prefix=f"{prefix}-org")
        set_claims(host, project, uid, {"organiser": True})
        print(f"{uid}\t{emulator_token(project, uid, claims={'organiser': True})}")
    for uid, token in mint(host, project, count, prefix=prefix):
        print(f"{uid}\t{token}")

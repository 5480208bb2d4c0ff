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
    or the emulator variables set; OpenAPI at /docs and /openapi.json. With --production it refuses
    to start while any *_EMULATOR_HOST variable is set."""
    import signal

    import uvicorn

    from boxoffice.api.app import ProductionMisconfigured, require_no_emulators

    own_auth: auth_emulator.AuthEmulator | None = None
    if production:
        try:
            require_no_emulators()
        except ProductionMisconfigured as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(EXIT_INPUT) from None
        if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
            typer.echo("--production needs GOOGLE_CLOUD_PROJECT", err=True)
            raise typer.Exit(EXIT_INPUT)
        os.environ["BOXOFFICE_PRODUCTION"] = "1"
    else:
        rec = em.recorded_stack()
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            if rec is None:
                typer.echo("No emulators: run `boxoffice dev up` first (or set FIRESTORE_EMULATOR_HOST "
                           "and FIREBASE_AUTH_EMULATOR_HOST), or pass --production.", err=True)
                raise typer.Exit(EXIT_NO_EMULATOR)
            os.environ["FIRESTORE_EMULATOR_HOST"] = rec.firestore_host
            os.environ.setdefault("GOOGLE_CLOUD_PROJECT", rec.project)
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "demo-boxoffice")
        if not os.environ.get(auth_emulator.ENV):
            auth = auth_emulator.recorded_auth_emulator()
            if auth is None:
                # Not the dev stack's: ours alone, stopped when serve stops (also on SIGTERM).
                auth = own_auth = auth_emulator.start_auth_emulator(os.environ["GOOGLE_CLOUD_PROJECT"])
            os.environ[auth_emulator.ENV] = auth.host

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # uvicorn shuts down on SIGTERM, then restores this handler and raises the signal again:
    # SystemExit then unwinds through the `finally` below instead of killing the process.
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    from boxoffice.cli import storefront

    try:
        project = os.environ["GOOGLE_CLOUD_PROJECT"]
        if not production:
            _prepare_local_pages(project)
        typer.echo(f"boxoffice API on http://{host}:{port} (project {project}, "
                   f"auth {'emulator ' + os.environ[auth_emulator.ENV] if not production else 'Firebase'})",
                   err=True)
        typer.echo(f"storefront: http://{host}:{port}/app/   dashboard: http://{host}:{port}/app/dashboard.html",
                   err=True)
        storefront.record_url(f"http://{host}:{port}")
        # Client addresses (rate limits) come from the socket, or from X-Forwarded-For only as
        # far as BOXOFFICE_TRUSTED_PROXY_HOPS says (api.ratelimit), never from uvicorn's rewrite.
        uvicorn.run("boxoffice.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", proxy_headers=False)
    finally:
        storefront.forget_url()
        signal.signal(signal.SIGTERM, previous)
        if own_auth is not None:
            auth_emulator.stop_auth_emulator(own_auth)


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

"""`boxoffice users register`: who emails go to."""

from __future__ import annotations

import typer

from boxoffice.cli.output import JsonOpt, client, emit, exit_on_error
from boxoffice.services.users import register_user

users_app = typer.Typer(help="Users (who emails go to).", no_args_is_help=True)


@users_app.command("register")
def users_register(user_id: str, email: str = typer.Option(..., help="Email address."),
                   name: str | None = typer.Option(None, help="Display name."), as_json: bool = JsonOpt) -> None:
    """Create or update a user (emails go to users/{uid}.email)."""
    with exit_on_error(as_json):
        user = register_user(client(), user_id, email, name)
    emit(as_json, user.__dict__, f"user {user.id} <{user.email}>")

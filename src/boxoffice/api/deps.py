"""What every endpoint can ask for: the database and the signed-in caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from boxoffice.api.auth import Caller, bearer_token
from boxoffice.api.problems import ApiProblem


def get_db(request: Request) -> Any:
    return request.app.state.db


def get_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <Firebase ID token>")] = None,
) -> Caller:
    """The verified user; the only source of a user id in the API (bodies never carry one)."""
    return request.app.state.verify_token(bearer_token(authorization))


def get_organiser(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.organiser:
        raise ApiProblem(403, "not_an_organiser",
                         "only organisers may do this; ask an administrator to mark your account")
    return caller


Db = Annotated[Any, Depends(get_db)]
SignedIn = Annotated[Caller, Depends(get_caller)]
Organiser = Annotated[Caller, Depends(get_organiser)]

"""What every endpoint can ask for: the database and the signed-in caller."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from boxoffice.api.auth import Caller, bearer_token
from boxoffice.api.problems import ApiProblem
from boxoffice.domain.errors import InvalidRequest
from boxoffice.services.users import register_user


def get_db(request: Request) -> Any:
    return request.app.state.db


def get_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <Firebase ID token>")] = None,
) -> Caller:
    """The verified user; the only source of a user id in the API (bodies never carry one)."""
    caller: Caller = request.app.state.verify_token(bearer_token(authorization))
    return caller


def get_organiser(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.organiser:
        raise ApiProblem(403, "not_an_organiser",
                         "only organisers may do this; ask an administrator to mark your account")
    return caller


def get_maybe_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="Optional: Bearer <Firebase ID token>")] = None,
) -> Caller | None:
    """The verified user when a token is sent (a bad one is still a 401), else None (anonymous)."""
    return None if authorization is None else get_caller(request, authorization)


def get_throttled_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <Firebase ID token>")] = None,
) -> Caller:
    """The verified user of a route that takes tickets, within the rate limits (``ratelimit``):
    the client's address is counted before the token is checked, the user right after."""
    limiter = request.app.state.rate_limiter
    limiter.check_ip(request)
    caller = get_caller(request, authorization)
    limiter.check_user(caller.uid)
    return caller


_CONTACTS_MAX = 100_000
_contacts: OrderedDict[str, str] = OrderedDict()
_contacts_lock = threading.Lock()


def keep_contact(request: Request, caller: Caller) -> None:
    """Put the caller's verified address on file for the emails their action causes.

    Call it once the action succeeded: a refused request writes nothing. Emails (confirmation,
    cancellation, waitlist offer) go to users/{uid}.email; a user who signed up through Firebase
    Auth has no such document until now. Only a verified address (the token's
    ``email_verified``) is written: anyone can sign up with someone else's address. Once per
    process per (uid, address), on the buyer's own document, which contends with nobody.
    """
    if not caller.email or not caller.email_verified:
        return
    with _contacts_lock:
        if _contacts.get(caller.uid) == caller.email:
            return
    try:
        register_user(request.app.state.db, caller.uid, caller.email)
    except InvalidRequest:
        return  # not an address we could mail anyway; the action stands
    with _contacts_lock:
        _contacts[caller.uid] = caller.email
        if len(_contacts) > _CONTACTS_MAX:
            _contacts.popitem(last=False)


Db = Annotated[Any, Depends(get_db)]
SignedIn = Annotated[Caller, Depends(get_caller)]
MaybeSignedIn = Annotated[Caller | None, Depends(get_maybe_caller)]
Throttled = Annotated[Caller, Depends(get_throttled_caller)]
Organiser = Annotated[Caller, Depends(get_organiser)]

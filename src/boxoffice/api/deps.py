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


_CONTACTS_MAX = 100_000
_contacts: OrderedDict[str, str] = OrderedDict()
_contacts_lock = threading.Lock()


def get_contactable_caller(caller: Annotated[Caller, Depends(get_caller)], request: Request) -> Caller:
    """The caller, with their address on file for the emails this request will cause.

    Emails (confirmation, cancellation, waitlist offer) go to users/{uid}.email; a user who
    signed up through Firebase Auth has no such document until now. It is written from the
    verified token's email before the action (so the email subscriber always finds it), once
    per process per (uid, address): a buyer's first request costs one extra write on their own
    document, which contends with nobody.
    """
    if caller.email:
        with _contacts_lock:
            known = _contacts.get(caller.uid) == caller.email
        if not known:
            try:
                register_user(request.app.state.db, caller.uid, caller.email)
            except InvalidRequest:
                return caller  # not an address we could mail anyway; the action goes on
            with _contacts_lock:
                _contacts[caller.uid] = caller.email
                if len(_contacts) > _CONTACTS_MAX:
                    _contacts.popitem(last=False)
    return caller


Db = Annotated[Any, Depends(get_db)]
SignedIn = Annotated[Caller, Depends(get_caller)]
Contactable = Annotated[Caller, Depends(get_contactable_caller)]
Organiser = Annotated[Caller, Depends(get_organiser)]

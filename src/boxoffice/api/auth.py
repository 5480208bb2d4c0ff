"""Who is calling: Firebase ID tokens, verified with firebase-admin.

Production (no ``FIREBASE_AUTH_EMULATOR_HOST``; ``app.create_app`` refuses to start in production
with any emulator variable set): ``firebase_admin.auth.verify_id_token`` checks the RS256 signature
against Google's keys, the audience/issuer (the project), expiry and subject, and by default (set
``BOXOFFICE_CHECK_REVOKED=0`` to skip it) the user is looked up in Firebase Auth on every request,
so a deleted, disabled or signed-out (revoked) user is refused at once rather than when the token
expires (up to an hour later). The lookups of concurrent requests share batched calls
(``UserLookups``): each still starts after its request arrived.

Development and tests (``FIREBASE_AUTH_EMULATOR_HOST`` set): the Auth emulator issues *unsigned*
tokens and firebase-admin then checks only audience, issuer and subject (not even expiry). So that
an expired or made-up token is still refused locally, we also check ``exp``/``iat`` ourselves and
ask the emulator for the user on every request (batched the same way; no cache: a deleted or
disabled user is refused at once): it must exist, not be disabled, not have had its tokens revoked
after the token was issued, and the token's custom claims must be the ones the emulator holds (a client cannot promote itself
to organiser by editing its token).

Organisers carry the custom claim ``organiser: true`` (set with ``set_organiser``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import firebase_admin
import firebase_admin.exceptions
from firebase_admin import auth as fb_auth

from boxoffice.api.problems import ApiProblem

ORGANISER_CLAIM = "organiser"
APP_NAME = "boxoffice-api"
# Claims Firebase itself puts in every ID token; anything else is a custom claim.
_STANDARD_CLAIMS = frozenset({
    "iss", "aud", "auth_time", "user_id", "sub", "iat", "exp", "email", "email_verified",
    "firebase", "name", "picture", "phone_number", "uid", "provider_id",
})
CLOCK_SKEW_S = 5


@dataclass(frozen=True)
class Caller:
    """The signed-in user a request acts for. Never built from a request body."""

    uid: str
    organiser: bool = False
    email: str | None = None
    email_verified: bool = False


class TokenVerifier(Protocol):
    def __call__(self, token: str) -> Caller: ...


def unauthenticated(detail: str) -> ApiProblem:
    return ApiProblem(401, "unauthenticated", detail, {"WWW-Authenticate": 'Bearer realm="boxoffice"'})


def firebase_app(project_id: str) -> firebase_admin.App:
    """The firebase-admin app of the API (one per process and project)."""
    name = f"{APP_NAME}-{project_id}"
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        options = {"projectId": project_id}
        if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
            # The emulator needs no credentials; firebase-admin substitutes its own for it.
            from firebase_admin import credentials
            from google.auth.credentials import AnonymousCredentials

            class _Anonymous(credentials.Base):  # type: ignore[misc]  # firebase_admin is untyped
                def get_credential(self) -> Any:
                    return AnonymousCredentials()

            return firebase_admin.initialize_app(_Anonymous(), options, name=name)
        return firebase_admin.initialize_app(options=options, name=name)


def custom_claims(claims: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in _STANDARD_CLAIMS}


class UserLookups:
    """Coalesces the user lookups of concurrent requests in a process into batched calls.

    Every signed-in request looks its user up (deleted, disabled, revoked: refused at once), and a
    lookup is a round trip to Firebase Auth: one per request capped the API at the Auth emulator's
    pace, about 70 a second, during a sale. Here the first request to need a lookup waits
    ``window_s`` and fetches, in one ``accounts:lookup`` call per 100 users, every user asked for
    meanwhile. Each lookup still starts after its request arrived, so nothing is cached: a user
    deleted or disabled before a request is refused by that request.
    """

    MAX_PER_CALL = 100  # accounts:lookup takes at most 100 identifiers

    class _Batch:
        def __init__(self) -> None:
            self.uids: list[str] = []
            self.done = threading.Event()
            self.users: dict[str, Any] = {}
            self.error: BaseException | None = None

    def __init__(self, fetch: Callable[[list[str]], dict[str, Any]], *, window_s: float = 0.005,
                 timeout_s: float = 30.0) -> None:
        self.fetch = fetch
        self.window_s = window_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._open: UserLookups._Batch | None = None

    def get(self, uid: str) -> Any:
        """The user record of ``uid`` (None when there is no such user); raises what the fetch raised."""
        with self._lock:
            batch, leader = self._open, False
            if batch is None:
                batch, leader = UserLookups._Batch(), True
                self._open = batch
            if uid not in batch.uids:
                batch.uids.append(uid)
        if leader:
            time.sleep(self.window_s)
            with self._lock:
                self._open = None  # later arrivals start the next batch
            try:
                for start in range(0, len(batch.uids), self.MAX_PER_CALL):
                    batch.users.update(self.fetch(batch.uids[start:start + self.MAX_PER_CALL]))
            except BaseException as exc:  # noqa: BLE001 - handed to every request of the batch
                batch.error = exc
            finally:
                batch.done.set()
        if not batch.done.wait(self.timeout_s):
            raise ApiProblem(503, "auth_unavailable", "cannot check sign-ins right now; try again shortly")
        if batch.error is not None:
            raise batch.error
        return batch.users.get(uid)


class FirebaseTokenVerifier:
    """Verifies Firebase ID tokens for one project (see the module docstring for the two modes)."""

    def __init__(self, project_id: str, *, check_revoked: bool = True, emulated: bool | None = None) -> None:
        self.app = firebase_app(project_id)
        self.check_revoked = check_revoked
        self.emulated = bool(os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")) if emulated is None else emulated
        self.users = UserLookups(self._fetch_users)

    def __call__(self, token: str) -> Caller:
        try:
            # The revocation check is ours (``_check_user``, batched), not firebase-admin's one
            # lookup per call.
            claims = fb_auth.verify_id_token(token, app=self.app, check_revoked=False)
        except fb_auth.ExpiredIdTokenError:
            raise unauthenticated("your sign-in has expired; sign in again") from None
        except fb_auth.RevokedIdTokenError:
            raise unauthenticated("your sign-in was revoked; sign in again") from None
        except fb_auth.UserDisabledError:
            raise unauthenticated("this account is disabled") from None
        except (fb_auth.InvalidIdTokenError, ValueError) as exc:
            raise unauthenticated(f"the ID token is not valid: {_short(exc)}") from None
        except fb_auth.CertificateFetchError:
            raise ApiProblem(503, "auth_unavailable",
                             "cannot check sign-ins right now; try again shortly") from None
        if self.emulated:
            self._check_against_emulator(claims)
        elif self.check_revoked:
            self._check_user(claims)
        return Caller(uid=claims["uid"], organiser=claims.get(ORGANISER_CLAIM) is True,
                      email=claims.get("email"), email_verified=claims.get("email_verified") is True)

    def _check_against_emulator(self, claims: dict[str, Any]) -> None:
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise unauthenticated("the ID token is not valid: it has no exp/iat")
        if exp < now - CLOCK_SKEW_S:
            raise unauthenticated("your sign-in has expired; sign in again")
        if iat > now + CLOCK_SKEW_S:
            raise unauthenticated("the ID token is not valid: issued in the future")
        user = self._check_user(claims)
        if custom_claims(claims) != (user.custom_claims or {}):
            raise unauthenticated("the ID token is not valid: its claims do not match the account")

    def _check_user(self, claims: dict[str, Any]) -> Any:
        """The account behind the token exists, is enabled and was not signed out since the token
        was issued (what firebase-admin's ``check_revoked`` checks, with the lookup batched)."""
        try:
            user = self.users.get(claims["uid"])
        except (fb_auth.UserNotFoundError, ValueError):
            user = None
        except firebase_admin.exceptions.FirebaseError:
            raise ApiProblem(503, "auth_unavailable", "cannot check sign-ins right now; try again shortly") from None
        if user is None:
            raise unauthenticated("the ID token is not valid: no such user")
        if user.disabled:
            raise unauthenticated("this account is disabled")
        valid_after = (user.tokens_valid_after_timestamp or 0) / 1000
        if float(claims.get("iat", 0)) < valid_after:
            raise unauthenticated("your sign-in was revoked; sign in again")
        return user

    def _fetch_users(self, uids: list[str]) -> dict[str, Any]:
        result = fb_auth.get_users([fb_auth.UidIdentifier(u) for u in uids], app=self.app)
        return {user.uid: user for user in result.users}


def _short(exc: Exception) -> str:
    text = str(exc).split(". See ")[0]
    return text[:200]


def bearer_token(header: str | None) -> str:
    if not header:
        raise unauthenticated("sign in first: send 'Authorization: Bearer <Firebase ID token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("the Authorization header must be 'Bearer <Firebase ID token>'")
    return token.strip()


def set_organiser(uid: str, project_id: str, organiser: bool = True) -> None:
    """Mark (or unmark) a user as an organiser with the custom claim; they must sign in again."""
    app = firebase_app(project_id)
    user = fb_auth.get_user(uid, app=app)
    claims = dict(user.custom_claims or {})
    if organiser:
        claims[ORGANISER_CLAIM] = True
    else:
        claims.pop(ORGANISER_CLAIM, None)
    fb_auth.set_custom_user_claims(uid, claims or None, app=app)

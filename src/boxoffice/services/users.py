"""Use case: users the system writes to (users/{uid}: email, name).

A user without a registered email (no document, or no ``email`` field) gets no email: the
email subscriber records the message as ``skipped`` (reason ``no_email``) and acks it, so a
missing address never blocks or dead-letters the pipeline. The pipeline audit reports such
orders, because every buyer of the simulator is registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.cloud import firestore

from boxoffice.domain.errors import InvalidRequest
from boxoffice.store.documents import user_ref

BATCH_LIMIT = 500  # Firestore: at most 500 writes in one commit


@dataclass(frozen=True)
class User:
    id: str
    email: str | None
    name: str | None


def _validate(user_id: str, email: str) -> None:
    if not user_id or "/" in user_id or len(user_id) > 128:
        raise InvalidRequest("user id must be 1-128 characters without '/'")
    if "@" not in email or any(c.isspace() for c in email) or len(email) > 254:
        raise InvalidRequest(f"not an email address: {email!r}")


def register_user(db: firestore.Client, user_id: str, email: str, name: str | None = None) -> User:
    """Create or update users/{user_id} with an email and a name (idempotent)."""
    _validate(user_id, email)
    user_ref(db, user_id).set(
        {"email": email, "name": name or user_id, "updated_at": firestore.SERVER_TIMESTAMP}, merge=True
    )
    return User(user_id, email, name or user_id)


def register_users(db: firestore.Client, users: Iterable[tuple[str, str, str | None]]) -> int:
    """Bulk variant of ``register_user`` for the simulator: (user_id, email, name) triples,
    written in commits of up to 500. Returns the number written."""
    count = 0
    batch = db.batch()
    pending = 0
    for user_id, email, name in users:
        _validate(user_id, email)
        batch.set(user_ref(db, user_id),
                  {"email": email, "name": name or user_id, "updated_at": firestore.SERVER_TIMESTAMP}, merge=True)
        pending += 1
        count += 1
        if pending == BATCH_LIMIT:
            batch.commit()
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()
    return count


def get_user(db: firestore.Client, user_id: str) -> User | None:
    snap = user_ref(db, user_id).get()
    if not snap.exists:
        return None
    doc = snap.to_dict() or {}
    return User(user_id, doc.get("email") or None, doc.get("name"))


def get_users(db: firestore.Client, user_ids: Iterable[str]) -> dict[str, User]:
    """The users that exist among ``user_ids``, read in one round trip."""
    refs = [user_ref(db, uid) for uid in dict.fromkeys(u for u in user_ids if u)]
    out: dict[str, User] = {}
    for snap in db.get_all(refs) if refs else []:
        if snap.exists:
            doc = snap.to_dict() or {}
            out[snap.id] = User(snap.id, doc.get("email") or None, doc.get("name"))
    return out

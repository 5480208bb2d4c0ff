"""Which relay publishes which outbox messages: leases on outbox partitions.

The outbox is split into ``partitions`` by a hash of the ordering key (the event id), so every
message of one event falls in one partition. A relay publishes a partition's messages only
while it holds the partition's lease ``relay_leases/{group}.pNN`` (``group``: the topic the
relays publish to, so a test's or a simulation's relays never take the dev stack's leases).

- A lease is a document naming its holder. Its age is judged on the server's clock (the
  snapshot's ``read_time`` minus the document's ``update_time``), so relays need no synchronised
  clocks; it lapses ``ttl_s`` after its last renewal. Every claim, renewal and release is a
  write guarded by the ``update_time`` the relay read (or ``create`` for a new lease): two
  relays cannot both win a lease.
- The holder stops publishing a partition ``margin_s`` before its lease could lapse as seen from
  its own clock (measured from before the renewal was sent), so by the time another relay may
  claim it, the old holder has stopped starting publishes there.
- Fair shares: every relay keeps a heartbeat ``relay_members/{group}.{relayId}``; a relay holds at
  most ``ceil(partitions / live relays)`` partitions, releases the surplus between publish rounds
  and claims free or lapsed ones up to its share. A relay that dies (SIGKILL) stops renewing;
  its partitions are claimed by the others ``ttl_s`` later.

Leases make several relays share the work without publishing everything twice; they are not
what keeps per-event order (see relay.py: every relay publishes an event's unpublished messages
as a prefix, in commit order, on an ordering-key publisher, so even two relays that both think
they hold a partition only duplicate messages, which subscribers dedupe).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from boxoffice.log import kv
from boxoffice.store.messaging import relay_lease_ref, relay_members_col

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    partitions: int = 8  # of the outbox; more partitions than relays lets the work spread
    # Generous on purpose: under load a renewal round trip can take seconds, and a holder stops
    # publishing ``margin_s`` before ttl_s counted from when it SENT the renewal.
    ttl_s: float = 30.0  # a lease not renewed for this long may be claimed by another relay
    renew_s: float = 3.0  # how often a relay renews its leases and rebalances
    margin_s: float = 10.0  # a holder stops publishing this long before its lease could lapse

    def __post_init__(self) -> None:
        if self.partitions < 1 or not 0 < self.renew_s < self.ttl_s - self.margin_s:
            raise ValueError("lease settings need partitions >= 1 and 0 < renew_s < ttl_s - margin_s")


def partition_of(ordering_key: str, partitions: int) -> int:
    """The outbox partition of a message: a stable hash of its ordering key (the event id)."""
    return zlib.crc32(ordering_key.encode()) % partitions


class PartitionLeases:
    """The leases one relay holds. ``renew`` runs on the relay's upkeep thread, ``usable`` on its
    publishing thread before each round. A surplus partition is first withdrawn from ``usable``,
    then released only once ``quiet()`` can be entered (the relay: no round publishing and every
    mark committed), so a released partition has nothing in flight."""

    def __init__(self, db: firestore.Client, group: str, settings: LeaseSettings | None = None,
                 relay_id: str | None = None) -> None:
        self.db = db
        self.group = group
        self.settings = settings or LeaseSettings()
        self.relay_id = relay_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._valid_until: dict[int, float] = {}  # partition -> monotonic time to stop publishing it
        self.lost = 0  # leases another relay took (ours had lapsed)
        self._lock = threading.Lock()

    @property
    def member_id(self) -> str:
        return f"{self.group}.{self.relay_id}"

    def usable(self) -> frozenset[int]:
        now = time.monotonic()
        with self._lock:
            return frozenset(p for p, until in self._valid_until.items() if until > now)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._valid_until)

    def _live_members(self) -> int:
        s = self.settings
        col = relay_members_col(self.db)
        col.document(self.member_id).set({"group": self.group, "relay_id": self.relay_id, "ttl_s": s.ttl_s,
                                          "pid": os.getpid(), "renewed_at": firestore.SERVER_TIMESTAMP})
        live = 0
        for snap in col.where(filter=FieldFilter("group", "==", self.group)).stream():
            if snap.read_time is not None and snap.update_time is not None and \
                    (snap.read_time - snap.update_time).total_seconds() <= float((snap.to_dict() or {}).get("ttl_s", s.ttl_s)):
                live += 1
        return max(1, live)

    def _write(self, partition: int, snap: Any, holder: str | None) -> bool:
        ref = relay_lease_ref(self.db, self.group, partition)
        fields = {"group": self.group, "partition": partition, "holder": holder,
                  "ttl_s": self.settings.ttl_s, "renewed_at": firestore.SERVER_TIMESTAMP}
        sent = time.monotonic()
        try:
            if snap is None or not snap.exists:
                ref.create(fields)
            else:
                ref.update(fields, option=self.db.write_option(last_update_time=snap.update_time))
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound):
            return False
        with self._lock:
            if holder == self.relay_id:
                self._valid_until[partition] = sent + self.settings.ttl_s - self.settings.margin_s
            else:
                self._valid_until.pop(partition, None)
        return True

    def _renew_together(self, partitions: list[int], snaps: dict[int, Any]) -> bool:
        """Renew the leases held in one commit (each write guarded by its own precondition: the
        commit is refused whole if any lease changed since it was read)."""
        fields = {"group": self.group, "holder": self.relay_id, "ttl_s": self.settings.ttl_s,
                  "renewed_at": firestore.SERVER_TIMESTAMP}
        batch = self.db.batch()
        for p in partitions:
            batch.update(relay_lease_ref(self.db, self.group, p), fields | {"partition": p},
                         option=self.db.write_option(last_update_time=snaps[p].update_time))
        sent = time.monotonic()
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
            return False
        with self._lock:
            for p in partitions:
                self._valid_until[p] = sent + self.settings.ttl_s - self.settings.margin_s
        return True

    def renew(self, quiet: Callable[[], AbstractContextManager[Any]] | None = None) -> list[int]:
        """One round: heartbeat, renew the leases held, release a surplus, claim up to the fair
        share. Returns the partitions held afterwards."""
        s = self.settings
        share = math.ceil(s.partitions / self._live_members())
        refs = [relay_lease_ref(self.db, self.group, p) for p in range(s.partitions)]
        by_id = {snap.id: snap for snap in self.db.get_all(refs)}
        snaps = {p: by_id.get(ref.id) for p, ref in enumerate(refs)}
        mine, free = [], []
        for p in range(s.partitions):
            snap = snaps.get(p)
            doc = (snap.to_dict() or {}) if snap is not None and snap.exists else {}
            holder = doc.get("holder")
            lapsed = snap is None or not snap.exists or holder is None or (
                snap.read_time is not None and snap.update_time is not None
                and (snap.read_time - snap.update_time).total_seconds() > float(doc.get("ttl_s", s.ttl_s)))
            if holder == self.relay_id and not lapsed:
                mine.append(p)
            else:
                if p in self._valid_until:
                    self.lost += 1
                    with self._lock:
                        self._valid_until.pop(p, None)
                    kv(log, logging.WARNING, "relay.lease_lost", relay=self.relay_id, partition=p,
                       holder=holder, lapsed=lapsed)
                if lapsed:
                    free.append(p)
        surplus = mine[share:]
        if surplus:  # hand it back for a newcomer, once no round is publishing it
            with self._lock:
                for p in surplus:
                    self._valid_until.pop(p, None)
            if quiet is not None:
                with quiet():
                    pass
            for p in surplus:
                self._write(p, snaps.get(p), None)
        keep = mine[:share]
        if keep and not self._renew_together(keep, snaps):
            for p in keep:  # one was taken meanwhile: find out which, one by one
                if not self._write(p, snaps.get(p), self.relay_id):
                    self.lost += 1
        room = share - min(len(mine), share)
        for p in free:
            if room <= 0:
                break
            if self._write(p, snaps.get(p), self.relay_id):
                room -= 1
        held = self.held()
        kv(log, logging.DEBUG, "relay.leases", relay=self.relay_id, share=share, held=",".join(map(str, held)))
        return held

    def release_all(self) -> None:
        """Give every lease back and remove the heartbeat (a clean stop: others take over at once)."""
        for p in self.held():
            ref = relay_lease_ref(self.db, self.group, p)
            snap = ref.get()
            if snap.exists and (snap.to_dict() or {}).get("holder") == self.relay_id:
                self._write(p, snap, None)
        with self._lock:
            self._valid_until.clear()
        relay_members_col(self.db).document(self.member_id).delete()

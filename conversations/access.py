"""Who may use which model, and what a model is: answers kept in memory until an admin changes
what they are made of.

Every chat page and every message asks which keys and models the member may pick
(``selectors.model_groups``), which team a reply counts against (``selectors.grant_for``) and
what a model is (``catalog.spec_for``). Each answer takes one or two ORM queries with
subqueries, and on the small machines chatsite runs on building them costs more than running
them: together about a third of a message's request. They change only when a key, its catalog,
a grant, a team or a membership does.

Each such change writes a new random *stamp* (the ``Stamp`` row named "access") in the same
transaction: receivers of the save, delete and many-to-many signals of those models, and
``changed()`` where a write skips signals (the catalog's bulk writes, the admin's offer and
withdraw actions; a refresh that changed nothing writes none). An answer is kept in this
process's ``fragments`` cache under the stamp read *before* it was computed, so it is never older
than its stamp, and the first question after a change — in any process — reads the new stamp and
computes afresh. Reading the stamp is one small query. A stamp is never written twice (a
rolled-back one is simply never seen again), and without one (a database just flushed) nothing is
kept. What is kept reads the database only, never a caller's copy of a key, and is kept at most
``KEPT_SECONDS``: a net should a change ever commit without its stamp.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import TypeVar

from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save

from .cache import local as local_cache
from .models import ApiKey, CatalogModel, Stamp

NAME = "access"
# A net under the stamps: should a change ever commit without its stamp (its process killed in
# between, in autocommit), an answer is not kept past this.
KEPT_SECONDS = 300
T = TypeVar("T")
_MISSING = object()


def changed(*, using: str | None = None, action: str = "post", **_signal) -> None:
    """Write a new stamp: what a member may use, or what a model is, may have changed. A signal
    receiver (many-to-many changes count once made, not when announced), and called by writes
    that send no signal."""
    if action.startswith("pre_"):
        return
    Stamp.objects.using(using or DEFAULT_DB_ALIAS).update_or_create(
        name=NAME, defaults={"value": uuid.uuid4().hex})


def current(using: str = DEFAULT_DB_ALIAS) -> str:
    """The stamp now ("" when there is none): one query on an index, no ORM."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {connection.ops.quote_name('value')} "
            f"FROM {connection.ops.quote_name(Stamp._meta.db_table)} "
            f"WHERE {connection.ops.quote_name('name')} = %s", [NAME])
        row = cursor.fetchone()
    return row[0] if row else ""


def remembered(question: str, parts: tuple, compute: Callable[[], T]) -> T:
    """Return the answer to ``question`` about ``parts`` (ids, names, flags: what the answer
    depends on besides the stamped models), computed by ``compute()`` unless this process
    kept it under the current stamp."""
    stamp = current()
    if not stamp:
        return compute()
    # The site's settings that answers depend on (tests and deployments change them).
    site = (settings.CHATSITE_CURRENCY, settings.CHATSITE_FIRST_TOKEN_TIMEOUT,
            tuple(settings.CHATSITE_FALLBACK_MODELS))
    digest = hashlib.blake2b(repr((question, parts, site)).encode("utf-8", "surrogatepass"),
                             digest_size=16).hexdigest()
    key = f"access:{stamp}:{digest}"
    cache = local_cache()
    found = cache.get(key, _MISSING)
    if found is not _MISSING:
        return found
    answer = compute()
    cache.set(key, answer, timeout=KEPT_SECONDS)
    return answer


def connect() -> None:
    """Write a new stamp on every change to keys, catalogs, grants, teams and memberships, and
    after migrations (which write without signals)."""
    for model in (ApiKey, CatalogModel, Group):
        post_save.connect(changed, sender=model, dispatch_uid=f"access-saved-{model.__name__}")
        post_delete.connect(changed, sender=model,
                            dispatch_uid=f"access-deleted-{model.__name__}")
    for relation in (ApiKey.teams, ApiKey.users, CatalogModel.teams, get_user_model().groups):
        m2m_changed.connect(changed, sender=relation.through,
                            dispatch_uid=f"access-{relation.through.__name__}")
    post_migrate.connect(_migrated, dispatch_uid="access-migrated")


def _migrated(sender, *, using: str = DEFAULT_DB_ALIAS, apps=None, **_signal) -> None:
    if sender.label != "conversations":
        return
    try:  # the state migrated to: without the table when migrating back past it
        (apps or django_apps).get_model("conversations", "Stamp")
    except LookupError:
        return
    changed(using=using)

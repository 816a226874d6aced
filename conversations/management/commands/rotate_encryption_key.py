"""Re-encrypt every stored API key under the first key of CHATSITE_ENCRYPTION_KEYS.

Rotation: put a new key first in CHATSITE_ENCRYPTION_KEYS (keep the old one after it), restart,
run this command, then remove the old key and restart again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from conversations import crypto, services


class Command(BaseCommand):
    help = "Re-encrypt every stored API key under the first key of CHATSITE_ENCRYPTION_KEYS."

    def handle(self, *args, **options) -> None:
        try:
            count = services.api_keys_reencrypt()
        except crypto.DecryptionError as error:
            raise CommandError(
                f"{error} Nothing was changed: every old key must stay in "
                "CHATSITE_ENCRYPTION_KEYS until this command has run."
            ) from None
        self.stdout.write(self.style.SUCCESS(
            f"Re-encrypted {count} API key(s) under the first encryption key. The other keys in "
            "CHATSITE_ENCRYPTION_KEYS can now be removed."
        ))

"""Manage upstream API keys without a browser.

    python manage.py apikey add --name NAME [--base-url URL] [--organization ORG] [--project PROJ]
                                [--default-model M] [--everyone] < secret
    python manage.py apikey list

The secret is read from standard input (or asked for without echo on a terminal), never from the
command line, where it would land in shell history and the process list.
"""

from __future__ import annotations

import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from conversations import services
from conversations.models import DEFAULT_BASE_URL, ApiKey


class Command(BaseCommand):
    help = "Add or list upstream API keys (secrets are read from standard input)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Add a key; the secret is read from standard input.")
        add.add_argument("--name", required=True)
        add.add_argument("--base-url", default=DEFAULT_BASE_URL)
        add.add_argument("--organization", default="")
        add.add_argument("--project", default="")
        add.add_argument("--default-model", default="")
        add.add_argument("--inactive", action="store_true", help="Store the key switched off.")
        add.add_argument("--everyone", action="store_true",
                         help="Let every user chat with this key (otherwise grant it to teams "
                              "or users in the admin).")
        sub.add_parser("list", help="List keys, masked.")

    def handle(self, *args, action: str, **options) -> None:
        if action == "add":
            self._add(options)
        else:
            self._list()

    def _add(self, options: dict) -> None:
        if sys.stdin.isatty():
            secret = getpass.getpass("API key (input hidden): ")
        else:
            secret = sys.stdin.readline()
        if not secret.strip():
            raise CommandError("No API key on standard input.")
        try:
            key = services.api_key_create(
                name=options["name"], secret=secret, base_url=options["base_url"],
                organization=options["organization"], project=options["project"],
                default_model=options["default_model"], is_active=not options["inactive"],
                everyone=options["everyone"],
            )
        except ValidationError as error:
            raise CommandError("; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
            )) from None
        self.stdout.write(self.style.SUCCESS(f"Added API key {key.name!r} ({key.secret_hint})."))

    def _list(self) -> None:
        rows = [("NAME", "KEY", "ORGANIZATION", "PROJECT", "BASE URL", "ACTIVE")]
        for key in ApiKey.objects.all():
            rows.append((key.name, key.secret_hint, key.organization or "-", key.project or "-",
                         key.base_url, "yes" if key.is_active else "no"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

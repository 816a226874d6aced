"""Logging filter that keeps secrets out of every log line."""

from __future__ import annotations

import logging

from .crypto import scrub_known_secrets


class MaskSecretsFilter(logging.Filter):
    """Mask, in a record's message, arguments and exception text, every secret this process has
    decrypted or stored (whatever its shape or escaping) and anything key-shaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as Django would
            return True
        record.msg = scrub_known_secrets(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub_known_secrets(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True

"""Logging filter that keeps key-shaped text out of every log line."""

from __future__ import annotations

import logging

from .crypto import mask_text


class MaskSecretsFilter(logging.Filter):
    """Mask anything key-shaped in a record's message, arguments and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as Django would
            return True
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

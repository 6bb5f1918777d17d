"""Notices a library logs when it is imported, held back until a run uses that library.

bitsandbytes is imported by peft (and so by transformers' Trainer) whether or not anything is quantised, and on CPUs
with AVX-512 BF16 it logs "Failed to load CPU gemm_4bit_forward from kernels-community ..." as it loads. That
notice is about 4-bit kernels: `import llmkit` holds it (and any other bitsandbytes log record) and a run that loads
a 4-bit model shows it (`release`). The alternative, importing peft lazily, is not ours to choose: transformers
imports it.
"""

from __future__ import annotations

import logging

HELD_LOGGERS = ("bitsandbytes",)
MAX_HELD = 20  # import-time notices are a handful; this only bounds a library that logs on and on


class _Held(logging.Handler):
    """Keeps the records instead of writing them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < MAX_HELD:
            self.records.append(record)


def hold() -> None:
    """From now on, the held loggers' records are kept, not shown (idempotent)."""
    for name in HELD_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _Held) for handler in logger.handlers):
            logger.addHandler(_Held())
            logger.propagate = False


def release(name: str = "bitsandbytes") -> None:
    """Show what `name` logged while held, and let its records through from now on: a run uses it."""
    logger = logging.getLogger(name)
    held = [handler for handler in logger.handlers if isinstance(handler, _Held)]
    for handler in held:
        logger.removeHandler(handler)
    logger.propagate = True
    for handler in held:
        for record in handler.records:
            logger.handle(record)

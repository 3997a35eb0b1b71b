"""Errors a user can act on. Each carries a message that names the field or file and what would be valid.

The CLI prints these without a traceback; anything else escaping is a bug.
"""
from __future__ import annotations


def shown(value: object, limit: int = 80) -> str:
    """A user's value quoted in a message: cut in the middle when long, so the message stays one readable line."""
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 2):]}"


class DistillError(Exception):
    """Base of every error meant for the user."""


class CatalogError(DistillError):
    """An unknown model, accelerator or SKU, or an unreadable model config."""


class PlanError(DistillError):
    """A plan file that cannot be read, or whose values are invalid."""


class PriceError(DistillError):
    """Prices that cannot be fetched or read."""


class DataError(DistillError):
    """A data file that is missing, unreadable, empty or malformed (the message names the file and line)."""


class RunError(DistillError):
    """A run that cannot start or continue here: models without weights, a method this machine cannot run, a
    run folder that cannot be resumed."""


class AzureError(DistillError):
    """Azure could not be used as asked: sign-in, workspace, quota, capacity, throttling, the network. The message
    says what failed and what to do; nothing already submitted is lost by it."""

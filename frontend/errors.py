"""Errors the frontend reports to users: always a single, self-explanatory line."""

from __future__ import annotations


class FrontendError(Exception):
    """A model could not be loaded or imported; the message is one line."""


class UnsupportedOpError(FrontendError):
    """The exported graph uses an ATen operator (or operator variant) the importer does not map."""

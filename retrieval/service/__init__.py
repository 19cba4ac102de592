"""HTTP service: the app factory, its routes and the Rasa custom actions."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]

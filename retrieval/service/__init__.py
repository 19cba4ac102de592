"""HTTP service. ``create_app`` is imported on first use, so the console can share the
service's request limits (``service.limits``) without importing the whole app."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)

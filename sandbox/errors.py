"""Exceptions raised by the sandbox package."""

from __future__ import annotations


class SandboxUnavailable(Exception):
    """The sandbox cannot run anything right now (engine down, image missing).

    This is *our* fault, never the user's: callers should retry the attempt later
    rather than mark the task as failed.
    """


class ImageBuildError(Exception):
    """Building a sandbox runtime image failed."""

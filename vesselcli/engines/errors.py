"""Why a model could not be opened; the CLI maps every ``ModelError`` to exit code 2."""
from __future__ import annotations


class ModelError(Exception):
    """A model file is missing, unreadable, not ours, or cannot run as asked."""


class EngineUnavailable(ModelError):
    """A backend cannot run here (not installed, no GPU, no engine built for this GPU).

    ``--engine auto`` treats this as a reason to try the next backend; an explicitly chosen
    engine reports it.
    """

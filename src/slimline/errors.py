"""Errors a user can cause. The CLI prints these without a traceback (``--debug`` shows it)."""

from __future__ import annotations


class SlimlineError(Exception):
    """Base class: the message says what was wrong and what to do."""


class DataError(SlimlineError):
    """A dataset is missing, corrupt or inconsistent."""


class ModelError(SlimlineError):
    """A model cannot be built or its weights do not fit."""


class RecipeError(SlimlineError):
    """A recipe file is missing or invalid."""


class ExportError(SlimlineError):
    """A model cannot be exported, or the export disagrees with the original."""


class RuntimeUnavailable(SlimlineError):
    """A runtime is not installed or cannot run on this machine."""


class RunFolderBusy(SlimlineError):
    """Another slimline process is writing the same run folder."""

"""Mistakes in what the user asked for: a flag, an environment variable, a configuration file.

The ``atft`` command reports a ``UsageError`` as one or two lines naming the setting to change
(exit status 2, no traceback unless ``--debug``); every other exception is a bug or a failure
of the pipeline and keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """A setting the user gave is wrong; the message names it and the values it may take."""

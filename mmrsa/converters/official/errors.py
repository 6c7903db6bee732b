# Copyright (c) mmrsa contributors. All rights reserved.
"""The one error of the official-checkpoint converter."""

__all__ = ['ConversionError']


class ConversionError(Exception):
    """The source is not a convertible official checkpoint."""

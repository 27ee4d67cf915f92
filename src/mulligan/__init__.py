"""Mulligan: a second chance for your production database."""

__version__ = "0.1.0"

"""Errors that mean "the user asked for something wrong": shown as one line, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (paths, flags, files); the CLI prints it and exits 2."""


class BundleError(UserError):
    """A model bundle that cannot be used: missing, tampered with, or unsafe."""

"""Errors the user can fix. The CLI prints them on one line and exits with code 2."""


class InputError(Exception):
    """Bad input: a usage error, a malformed file, an unsupported option."""

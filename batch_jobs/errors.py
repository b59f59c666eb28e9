"""Errors of bulk jobs that the caller caused (a 4xx on the API, exit status 2 on the command line)."""


class JobInputError(ValueError):
    """A job cannot run as asked: its input is missing or malformed, or its service unknown or of the
    wrong type. The message says what to fix."""

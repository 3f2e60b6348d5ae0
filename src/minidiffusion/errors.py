"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """A problem with what the user asked for (a bad key, a missing file, ...), not a bug.

    The CLI prints ``error: <message>`` on one line and exits with status 2; ``--debug`` shows the traceback.
    """

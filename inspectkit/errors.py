"""The one exception type for bad user input; scripts turn it into a one-line message and exit code 2."""


class UserError(Exception):
    """Input the user can fix (a path, a flag, a file). The message says what to do."""

"""The exception type for problems the user can fix; scripts turn it into a one-line message and an exit code."""


class UserError(Exception):
    """Input the user can fix (a path, a flag, a file). The message says what to do.

    Scripts exit with ``exit_code`` (2, as argparse does for bad flags); subclasses may choose another.
    """

    exit_code = 2

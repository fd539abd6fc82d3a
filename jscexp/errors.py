"""The one exception type for mistakes a user can fix; the entry point prints it as one line."""


class UserError(Exception):
    """Bad input from the user: the message says what to change."""

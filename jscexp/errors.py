"""The one exception type for mistakes a user can fix; the entry point prints it as one line."""


class UserError(Exception):
    """Bad input from the user: the message says what to change."""


class Pruned(Exception):
    """A search pruned this trial after an epoch: a result, not a failure."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned by the search after epoch {epoch}")
        self.epoch = epoch

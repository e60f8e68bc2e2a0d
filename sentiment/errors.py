"""One exception family for user errors.

A `SentimentError` is something the user can fix (a bad path, a corrupt file, a
mismatched run folder). The CLI prints its message on one line and exits with
code 2; anything else is a bug and keeps its traceback.
"""


class SentimentError(Exception):
    """A user-facing error: the message names the thing, where it is, and what to do."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: multi-line messages would break the CLI contract.
        return " ".join(super().__str__().split())

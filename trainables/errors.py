"""The one error type every package raises for bad user input (the CLI prints it, exits 2)."""


class UserError(Exception):
    """Bad input from the user: printed as one line without a traceback; exit code 2.

    The message names the field (or file) and the rule, e.g.
    ``pruning.period: must be >= 1, got 0``. Several problems are joined one per line.
    """

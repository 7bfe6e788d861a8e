"""The root of every error a member is told about."""


class UserError(Exception):
    """An error whose str() is one sentence for a member: what went wrong and, where it helps, what to do."""

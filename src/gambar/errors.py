"""User-facing errors: the CLI prints these as one line (no traceback) and exits with code 2."""


class GambarError(Exception):
    """A mistake the user can fix (bad prompt, path, size, corrupt file). Never a bug."""


class InvalidInputError(GambarError):
    """An argument is out of range or malformed."""


class ModelNotFoundError(GambarError):
    """A model name or path does not resolve to a saved model."""


class CorruptFileError(GambarError):
    """A checkpoint, weight file or config is unreadable or fails its integrity check."""

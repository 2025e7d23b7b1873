from . import masked_ce  # noqa: F401

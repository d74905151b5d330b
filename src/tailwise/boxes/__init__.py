"""boxes losses."""

from . import functional  # noqa: F401

__all__: list = []

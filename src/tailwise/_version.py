"""The single source of tailwise's version (read by pyproject.toml and ``tailwise --version``)."""

__version__ = "0.1.0"

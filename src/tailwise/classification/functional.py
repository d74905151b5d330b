"""Functional forms of the classification losses."""

__all__: list = []

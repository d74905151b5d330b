"""Functional forms of the ranking losses."""

__all__: list = []

"""Functional forms of the regression losses."""

__all__: list = []

"""Functional forms of the boxes losses."""

__all__: list = []

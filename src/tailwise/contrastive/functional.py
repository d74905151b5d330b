"""Functional forms of the contrastive losses."""

__all__: list = []

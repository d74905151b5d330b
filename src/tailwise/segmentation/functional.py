"""Functional forms of the segmentation losses."""

__all__: list = []

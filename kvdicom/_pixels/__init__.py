"""Stored bytes to pixel_array's values: decode, corrections, colour, modality.

Internal: the public API is the top-level ``kvdicom``.
"""

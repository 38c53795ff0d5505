"""Compressed pixel data: the one decoder route and its back ends.

Internal: the public API is the top-level ``kvdicom``.
"""

"""Headers: the fast walk, pydicom's fallback, layout types and rules, encapsulated items, codestreams.

Internal: the public API is the top-level ``kvdicom``.
"""

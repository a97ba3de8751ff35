"""Hostile inputs shared by the unit, contract and end-to-end tests (see corpus.py)."""

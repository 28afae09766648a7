"""Helpers for testing code built on tnmars: hypothesis strategies in :mod:`.strategies`."""

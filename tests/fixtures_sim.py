"""Pytest fixtures that run the provider simulator over real HTTP (filled in by the providers work)."""

"""Shared Flax modules and pure functions on parameters."""

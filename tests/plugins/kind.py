"""Placeholder until the kind plugin lands."""

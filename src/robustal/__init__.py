"""Robust active learning."""
__version__ = "0.2.0"

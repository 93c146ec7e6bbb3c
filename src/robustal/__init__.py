"""Robust active learning."""
__version__ = "0.1.0"

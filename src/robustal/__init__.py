"""Robust active learning."""
__version__ = "0.4.0"

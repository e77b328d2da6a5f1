"""Specialist assistants on one small model: legal, medical and support specialists sharing one base LM."""

__version__ = "0.1.0"

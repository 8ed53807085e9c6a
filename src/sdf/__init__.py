"""sdf: turn an AI constitution into a midtraining corpus of synthetic documents."""

__version__ = "0.1.0"

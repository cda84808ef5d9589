"""CTRL-Rec: natural-language control of recommender systems (the method, without the harness)."""

__version__ = "0.1.0"

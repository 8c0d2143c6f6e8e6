"""synthpref: synthetic preference data at cluster scale."""
__version__ = "0.1.0"

"""The faasd version: one leaf module every layer (and the SDK) reads it from."""

__version__ = "0.1.0"

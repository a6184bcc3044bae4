"""Test helpers for users of faasd: a pytest plugin with a real platform fixture (``.plugin``)."""

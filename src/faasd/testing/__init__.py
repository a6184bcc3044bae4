"""Test helpers for users of faasd: a pytest plugin with a real platform fixture (``.plugin``), and leak
checks for real sandboxes, by id (``.leaks``)."""

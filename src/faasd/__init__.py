"""faasd: a self-hosted serverless platform with real runc isolation, CRIU snapshots and branching."""

__version__ = "0.1.0"

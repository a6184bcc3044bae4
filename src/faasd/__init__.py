"""faasd: a self-hosted serverless platform with real runc isolation, CRIU snapshots and branching.

The Python SDK is re-exported here: ``faasd.Client`` and ``faasd.AsyncClient``.
"""

__version__ = "0.1.0"

from faasd.sdk import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]

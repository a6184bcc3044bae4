"""HTTP API: native ``/api/v1`` routes, OpenFaaS gateway routes, auth, metrics."""

from faasd.api.app import create_app

__all__ = ["create_app"]

"""The CRIU settings faasd applies to every checkpoint and restore it asks runc for.

runc hands CRIU a configuration file named by the ``org.criu.config`` annotation of the container's
config.json (its values override runc's RPC settings). faasd points it at :data:`CRIU_CONFIG`, a file
shipped with the package, so the settings apply per sandbox without touching ``/etc/criu``.

CRIU keeps its kernel-feature probe results in ``/run/criu.kdat`` only when ``/run`` is a tmpfs; on
hosts where it is not, every dump and restore re-probes the kernel (~25 ms of each).
"""

from __future__ import annotations

from pathlib import Path

CRIU_CONFIG_ANNOTATION = "org.criu.config"
CRIU_CONFIG = Path(__file__).with_name("criu.conf")


def criu_annotations() -> dict[str, str]:
    """The config.json annotations that make runc use faasd's CRIU settings."""
    return {CRIU_CONFIG_ANNOTATION: str(CRIU_CONFIG)}


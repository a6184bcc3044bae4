"""The ``faas`` command line (typer + rich). Entry point: ``faasd.cli.main:main`` (app: ``main:app``)."""

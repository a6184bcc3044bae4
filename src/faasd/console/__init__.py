"""The web console served at ``/ui``: cookie sessions, console-only JSON endpoints and static assets.

``faasd.console.mount.install_console`` wires it into the API app; this package's ``session`` module is
also used by the API's auth layer (a console session is an alternative to a Bearer key).
"""

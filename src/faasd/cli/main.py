"""``faas``: the command line of faasd.

Every command talks to the daemon through :class:`faasd.sdk.Client` (``--url``/``FAAS_URL``,
``--api-key``/``FAAS_API_KEY``), except ``faas up`` (runs the daemon) and ``faas image`` (works on
the local image store). Errors are printed in red with a non-zero exit code, never as a traceback.

Start-up cost: this module and the command modules import only typer and the standard library at the
top; the SDK (httpx, msgspec), rich and the server packages are imported by the command that uses them
(``bench/cli_footprint.py`` measures it, ``tests/unit/cli/test_cli_footprint.py`` keeps it so).
"""

from __future__ import annotations

import copy
import sys
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from faasd._version import __version__
from faasd.cli import _context, execute, functions, resources, system
from faasd.cli import _output as out
from faasd.cli.instances import instance_app, job_app
from faasd.cli.namespaces import namespace_app
from faasd.cli.snapshots import branch, merge, sandbox_app, snapshot_app
from faasd.errors import FaasdError

EXIT_API_ERROR = 1
EXIT_CONNECTION = 3


def _sdk_error_exit(exc: Exception) -> int | None:
    """The exit code for an SDK error, None if ``exc`` is not one (the SDK is only loaded by a call)."""
    errors = sys.modules.get("faasd.sdk.errors")
    if errors is None or not isinstance(exc, errors.FaasdClientError):
        return None
    return EXIT_CONNECTION if isinstance(exc, errors.FaasdConnectionError) else EXIT_API_ERROR


class FaasGroup(typer.core.TyperGroup):
    """Turns faasd errors raised by any (sub)command into a red message and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FaasdError as exc:  # a local step (source packing, image store)
            out.fail(str(exc), EXIT_API_ERROR)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:  # the daemon's answer through the SDK, or a real bug (re-raised)
            code = _sdk_error_exit(exc)
            if code is None:
                raise
            out.fail(str(exc), code)


app = typer.Typer(
    name="faas",
    cls=FaasGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="faasd: deploy and run functions in real runc sandboxes.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="FAAS_URL", show_envvar=True, help="Daemon URL [default: http://127.0.0.1:8080]"
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="FAAS_API_KEY",
            show_envvar=True,
            help="API key (default: the admin key file if readable).",
        ),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="HTTP time-out in seconds.")] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            envvar="FAAS_NAMESPACE",
            show_envvar=True,
            help="Namespace to act in [default: the key's, else openfaas-fn; lists: every one the key sees].",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state = _context.state(ctx)
    state.url, state.api_key, state.timeout, state.namespace = url, api_key, timeout, namespace


_fn = "Functions"
app.command(rich_help_panel=_fn)(functions.deploy)
app.command("ls", rich_help_panel=_fn)(functions.ls)
app.command(rich_help_panel=_fn)(functions.describe)
app.command(rich_help_panel=_fn)(functions.invoke)
app.command(rich_help_panel=_fn)(functions.logs)
app.command(rich_help_panel=_fn)(functions.scale)
app.command("rm", rich_help_panel=_fn)(functions.rm)
app.command("exec", rich_help_panel=_fn)(execute.exec_)
app.command(rich_help_panel=_fn)(execute.fork)
app.command(rich_help_panel=_fn)(execute.prewarm)
app.command(rich_help_panel=_fn)(execute.pools)
app.add_typer(resources.executions_app, name="executions", rich_help_panel=_fn)
app.add_typer(resources.secrets_app, name="secrets", rich_help_panel="Access")
app.add_typer(resources.keys_app, name="keys", rich_help_panel="Access")
app.add_typer(namespace_app, name="namespace", rich_help_panel="Access")
_snap = "Snapshots"
app.add_typer(snapshot_app, name="snapshot", rich_help_panel=_snap)
app.add_typer(sandbox_app, name="sandbox", rich_help_panel=_snap)
app.command(rich_help_panel=_snap)(branch)
app.command(rich_help_panel=_snap)(merge)
app.add_typer(instance_app, name="instance", rich_help_panel="Instances")
app.add_typer(job_app, name="job", rich_help_panel="Instances")
app.command(rich_help_panel="Platform")(system.up)
app.command(rich_help_panel="Platform")(system.health)
app.command(rich_help_panel="Platform")(system.metrics)


def _mount_images() -> None:
    """``faas image ...`` (local image store, another module) and ``faas images`` = ``faas image ls``."""
    try:
        from faasd.cli.images import image_app
    except ImportError:  # images CLI not written yet in this tree: the rest of faas still works
        return
    app.add_typer(image_app, name="image", rich_help_panel="Platform")
    for info in image_app.registered_commands:
        callback = info.callback
        if callback is not None and (info.name == "ls" or (info.name is None and callback.__name__ == "ls")):
            app.command("images", rich_help_panel="Platform", help="List images (= faas image ls).")(callback)
            break


_mount_images()


_ROOT_OPTIONS_WITH_VALUE = ("--url", "--api-key", "--timeout")


def command_name(args: list[str]) -> str | None:
    """The (sub)command ``args`` run, after the root options; None for root-level use (``--help``,
    ``--version``, nothing) or anything unusual (then the full app parses it)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _ROOT_OPTIONS_WITH_VALUE:
            skip = True
        elif arg.startswith(tuple(o + "=" for o in _ROOT_OPTIONS_WITH_VALUE)):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def app_for(name: str | None) -> typer.Typer:
    """``app`` with only the command or command group ``name`` (and the root options): typer turns every
    registered command into a click command (and a validator per parameter) on each run, so the ``faas``
    program builds just the one it runs. ``app`` itself when ``name`` is None or not a command."""
    if name is None:
        return app
    commands = [
        c
        for c in app.registered_commands
        if c.callback is not None and (c.name or typer.main.get_command_name(c.callback.__name__)) == name
    ]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    single = copy.copy(app)
    single.registered_commands, single.registered_groups = commands, groups
    return single


def main() -> Any:
    """The ``faas`` program (the console script): ``app`` without the optional imports ``faas`` never uses
    (:func:`faasd.cli._context.skip_optional_imports`; only in this process, not when ``app`` is embedded),
    holding only the command being run (:func:`app_for`)."""
    _context.skip_optional_imports()
    return app_for(command_name(sys.argv[1:]))()


if __name__ == "__main__":
    raise SystemExit(main())

"""``faas``: the command line of faasd.

Every command talks to the daemon through :class:`faasd.sdk.Client` (``--url``/``FAAS_URL``,
``--api-key``/``FAAS_API_KEY``), except ``faas up`` (runs the daemon) and ``faas image`` (works on
the local image store). Errors are printed in red with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import typer.core

from faasd import __version__
from faasd.cli import _context, execute, functions, resources, system
from faasd.cli import _output as out
from faasd.cli.instances import instance_app, job_app
from faasd.cli.snapshots import branch, merge, sandbox_app, snapshot_app
from faasd.errors import FaasdError

EXIT_API_ERROR = 1
EXIT_CONNECTION = 3


class FaasGroup(typer.core.TyperGroup):
    """Turns faasd errors raised by any (sub)command into a red message and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        from faasd.sdk import FaasdClientError, FaasdConnectionError

        try:
            return super().invoke(ctx)
        except FaasdConnectionError as exc:
            out.fail(str(exc), EXIT_CONNECTION)
        except (FaasdClientError, FaasdError) as exc:  # the daemon's answer, or a local step (source packing)
            out.fail(str(exc), EXIT_API_ERROR)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state = _context.state(ctx)
    state.url, state.api_key, state.timeout = url, api_key, timeout


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

"""The argument lists of runc's CLI (also spoken by gVisor's ``runsc``): pure builders, unit-tested, run by
:class:`faasd.runtime.runc.OciRuntime`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


class OciCommandLine:
    """Builds the argv of every runc subcommand for one binary and ``--root`` (no process is run)."""

    def __init__(self, binary: str, root: Path, *, debug: bool = False) -> None:
        self.binary = binary
        self.root = Path(root)
        self.debug = debug

    # ------------------------------------------------------------ arg builders
    def global_args(self, log_file: Path | None = None) -> list[str]:
        args = [self.binary, "--root", str(self.root)]
        if log_file is not None:
            args += ["--log", str(log_file), "--log-format", "json"]
        if self.debug:
            args.append("--debug")
        return args

    def create_args(
        self,
        container_id: str,
        bundle: Path,
        *,
        pid_file: Path | None = None,
        console_socket: Path | None = None,
        no_pivot: bool = False,
    ) -> list[str]:
        args = ["create", "--bundle", str(bundle)]
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        if no_pivot:
            args.append("--no-pivot")
        return [*args, container_id]

    def start_args(self, container_id: str) -> list[str]:
        return ["start", container_id]

    def run_args(
        self, container_id: str, bundle: Path, *, detach: bool = False, pid_file: Path | None = None
    ) -> list[str]:
        args = ["run", "--bundle", str(bundle)]
        if detach:
            args.append("--detach")
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        return [*args, container_id]

    def exec_args(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        detach: bool = False,
        pid_file: Path | None = None,
        process_json: Path | None = None,
    ) -> list[str]:
        args = ["exec"]
        if process_json is not None:
            args += ["--process", str(process_json)]
        for k, v in (env or {}).items():
            args += ["--env", f"{k}={v}"]
        if cwd:
            args += ["--cwd", cwd]
        if user:
            args += ["--user", user]
        if detach:
            args.append("--detach")
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        args.append(container_id)
        if process_json is None:
            args += list(argv)
        return args

    def kill_args(
        self, container_id: str, signal: str | int = "KILL", *, all_processes: bool = False
    ) -> list[str]:
        args = ["kill"]
        if all_processes:
            args.append("--all")
        return [*args, container_id, str(signal)]

    def delete_args(self, container_id: str, *, force: bool = False) -> list[str]:
        return ["delete", *(["--force"] if force else []), container_id]

    def state_args(self, container_id: str) -> list[str]:
        return ["state", container_id]

    def list_args(self) -> list[str]:
        return ["list", "--format", "json"]

    def pause_args(self, container_id: str) -> list[str]:
        return ["pause", container_id]

    def resume_args(self, container_id: str) -> list[str]:
        return ["resume", container_id]

    def events_args(
        self, container_id: str, *, stats: bool = False, interval_s: float | None = None
    ) -> list[str]:
        args = ["events"]
        if stats:
            args.append("--stats")
        if interval_s is not None:
            args += ["--interval", f"{interval_s:g}s"]
        return [*args, container_id]

    def checkpoint_args(
        self,
        container_id: str,
        image_path: Path,
        *,
        work_path: Path | None = None,
        parent_path: str | None = None,
        leave_running: bool = False,
        tcp_established: bool = False,
        ext_unix_sk: bool = False,
        shell_job: bool = False,
        file_locks: bool = False,
        pre_dump: bool = False,
        manage_cgroups_mode: str | None = None,
        auto_dedup: bool = False,
        extra: Sequence[str] = (),
    ) -> list[str]:
        args = ["checkpoint", "--image-path", str(image_path)]
        if work_path is not None:
            args += ["--work-path", str(work_path)]
        if parent_path is not None:
            args += ["--parent-path", parent_path]
        for flag, on in (
            ("--leave-running", leave_running),
            ("--tcp-established", tcp_established),
            ("--ext-unix-sk", ext_unix_sk),
            ("--shell-job", shell_job),
            ("--file-locks", file_locks),
            ("--pre-dump", pre_dump),
            ("--auto-dedup", auto_dedup),
        ):
            if on:
                args.append(flag)
        if manage_cgroups_mode is not None:
            args += ["--manage-cgroups-mode", manage_cgroups_mode]
        return [*args, *extra, container_id]

    def restore_args(
        self,
        container_id: str,
        bundle: Path,
        image_path: Path,
        *,
        work_path: Path | None = None,
        detach: bool = True,
        pid_file: Path | None = None,
        tcp_established: bool = False,
        ext_unix_sk: bool = False,
        shell_job: bool = False,
        file_locks: bool = False,
        manage_cgroups_mode: str | None = None,
        no_pivot: bool = False,
        extra: Sequence[str] = (),
    ) -> list[str]:
        args = ["restore", "--bundle", str(bundle), "--image-path", str(image_path)]
        if work_path is not None:
            args += ["--work-path", str(work_path)]
        if detach:
            args.append("--detach")
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        for flag, on in (
            ("--tcp-established", tcp_established),
            ("--ext-unix-sk", ext_unix_sk),
            ("--shell-job", shell_job),
            ("--file-locks", file_locks),
            ("--no-pivot", no_pivot),
        ):
            if on:
                args.append(flag)
        if manage_cgroups_mode is not None:
            args += ["--manage-cgroups-mode", manage_cgroups_mode]
        return [*args, *extra, container_id]

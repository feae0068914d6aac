"""IPython magics for the labs, loaded with ``%load_ext labkit``.

``%mlserver start|stop|list|logs`` manages this kernel's lab servers (``labkit.serving``);
``%%model_settings FOLDER`` writes the cell's JSON to ``FOLDER/model-settings.json`` once
MLServer's own settings model accepts it.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

USAGE = """usage:
  %mlserver start REPOSITORY [--workers N] [--timeout S]   start a server (returns it: srv = %mlserver start ...)
  %mlserver list                                          the servers this kernel runs
  %mlserver stop [PORT|all]                               stop one server (by its REST port) or all
  %mlserver logs [PORT] [-n LINES]                        the last lines of a server's log"""


class MagicError(Exception):
    """A mistake in a magic's arguments: shown as one line, never as a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise MagicError(f"{message}\n{USAGE}")


def _parser() -> _Parser:
    parser = _Parser(prog="%mlserver", add_help=False)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    start = commands.add_parser("start", add_help=False)
    start.add_argument("repository")
    start.add_argument("--workers", type=int, default=None, help="MLServer's parallel_workers")
    start.add_argument("--timeout", type=float, default=60)
    commands.add_parser("list", add_help=False)
    stop = commands.add_parser("stop", add_help=False)
    stop.add_argument("which", nargs="?", default=None)
    logs = commands.add_parser("logs", add_help=False)
    logs.add_argument("which", nargs="?", default=None)
    logs.add_argument("-n", "--lines", type=int, default=40)
    return parser


def _pick(which: str | None, command: str):
    """The running server meant by ``which`` (a REST port), or the only one."""
    from labkit.serving import running_servers

    servers = running_servers()
    if not servers:
        raise MagicError("no lab server is running in this kernel; start one with %mlserver start FOLDER")
    if which is None:
        if len(servers) == 1:
            return servers[0]
        ports = ", ".join(str(s.http_port) for s in servers)
        raise MagicError(f"{len(servers)} servers run (REST ports {ports}); say which: %mlserver {command} PORT")
    for server in servers:
        if str(server.http_port) == which:
            return server
    ports = ", ".join(str(s.http_port) for s in servers)
    raise MagicError(f"no running server has REST port {which}; running: {ports}")


def server_table(servers) -> str:
    """A plain-text table of servers, one line each."""
    if not servers:
        return "No lab server is running in this kernel."
    lines = [f"{'REST port':>9}  {'gRPC port':>9}  {'pid':>7}  models / repository"]
    for s in servers:
        lines.append(f"{s.http_port:>9}  {s.grpc_port:>9}  {s.pid or '-':>7}  "
                     f"{', '.join(s.models) or '-'}  ({s.repository})")
    return "\n".join(lines)


@magics_class
class LabMagics(Magics):
    @line_magic
    def mlserver(self, line: str):
        """Start, list, stop and read the logs of this kernel's MLServer processes (see ``%mlserver``)."""
        from labkit.serving import Server, ServerError, running_servers

        try:
            args = _parser().parse_args(shlex.split(line))
            if args.command is None:
                print(USAGE)
            elif args.command == "start":
                settings = {} if args.workers is None else {"parallel_workers": args.workers}
                server = Server(args.repository, settings=settings, timeout=args.timeout).start()
                print(f"MLServer ready: REST {server.url}, gRPC {server.grpc_target}; "
                      f"models: {', '.join(server.models) or 'none'}")
                return server
            elif args.command == "list":
                print(server_table(running_servers()))
            elif args.command == "stop":
                targets = running_servers() if args.which == "all" else [_pick(args.which, "stop")]
                for server in targets:
                    server.stop()
                    print(f"Stopped the server on REST port {server.http_port}.")
            elif args.command == "logs":
                print(_pick(args.which, "logs").logs(args.lines))
        except (MagicError, ServerError, ValueError) as e:
            print(f"%mlserver: {e}")
        return None

    @cell_magic
    def model_settings(self, line: str, cell: str):
        """Write the cell (JSON) to ``FOLDER/model-settings.json`` if MLServer accepts it.

        ``%%model_settings work/models/cancer`` followed by the settings as JSON. Nothing is
        written when the JSON or the settings are invalid; the message says what to fix.
        """
        try:
            path = write_model_settings(line.strip(), cell)
        except MagicError as e:
            print(f"%%model_settings: {e}")
            return None
        print(f"Wrote {path}")
        return None


def write_model_settings(target: str, text: str) -> Path:
    """Validate ``text`` with MLServer's ``ModelSettings`` and write it as ``model-settings.json``.

    ``target`` is the model's folder (created if missing) or a path ending in
    ``model-settings.json``. Raises ``MagicError`` with a one-line reason and writes nothing
    when the text is not JSON or MLServer would reject the settings.
    """
    from mlserver.settings import ModelSettings
    from pydantic import ValidationError

    from labkit.client import validation_message

    if not target:
        raise MagicError("say where to write: %%model_settings FOLDER (the model's folder in the repository)")
    path = Path(target).expanduser()
    if path.name != "model-settings.json":
        path = path / "model-settings.json"
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MagicError(f"the cell is not valid JSON ({e}); use double quotes, true/false and null") from None
    if not isinstance(data, dict):
        raise MagicError(f"model settings are a JSON object {{...}}, not a {type(data).__name__}")
    try:
        ModelSettings.model_validate(data)
    except ValidationError as e:
        raise MagicError(f"MLServer would reject these settings: {validation_message(e)}; nothing written") from None
    if data.get("name") and data["name"] != path.parent.name:
        print(f"Note: the model is named {data['name']!r}; MLServer uses that name, not the folder's "
              f"({path.parent.name!r}).")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(LabMagics)

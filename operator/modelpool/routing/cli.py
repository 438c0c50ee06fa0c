"""``modelpool router ...`` commands (wired into the ``modelpool`` CLI by ``register``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modelpool.cli import log_level
from modelpool.routing.config import BUILTIN_SCORER_FACTORY, ConfigError
from modelpool.routing.httpserver import DRAIN_SECONDS, IDLE_TIMEOUT_S, MAX_CONNECTIONS


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``router serve`` and ``router check-config`` to the ``modelpool`` CLI."""
    router = subparsers.add_parser("router", help="the sidecar router (KServe v2 front for a pool)")
    _add_commands(router)


def _add_commands(router: argparse.ArgumentParser) -> None:
    """``serve`` and ``check-config`` under ``modelpool router`` or ``python -m modelpool.routing``."""
    commands = router.add_subparsers(dest="router_command", required=True)
    serve = commands.add_parser("serve", help="serve a pool's variants behind one model name")
    serve.add_argument(
        "--config",
        type=Path,
        required=True,
        help="RouterConfig file (JSON or YAML), e.g. a mounted ConfigMap",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks one)")
    serve.add_argument(
        "--admin-token-file", type=Path, default=None,
        help="file with the admin API bearer token (else $MODELPOOL_ROUTER_ADMIN_TOKEN; none: admin off)",
    )  # fmt: skip
    serve.add_argument(
        "--drain-seconds", type=float, default=DRAIN_SECONDS,
        help=f"on SIGTERM, answer what was received for at most this long before exiting (default "
        f"{DRAIN_SECONDS:g}, under a pod's default 30 s grace period)",
    )  # fmt: skip
    serve.add_argument(
        "--idle-timeout-seconds", type=_positive_seconds, default=IDLE_TIMEOUT_S,
        help=f"close a client keep-alive connection with no request for this long (default "
        f"{IDLE_TIMEOUT_S:g}; keep it above the idle timeout of the load balancer or client pool in front)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", type=_positive_int, default=MAX_CONNECTIONS,
        help=f"client connections open at once; one more is answered 503 and closed (default "
        f"{MAX_CONNECTIONS}; the open-files soft limit is raised to fit, and the cap lowered to what "
        "the hard limit holds, with a warning)",
    )  # fmt: skip
    serve.add_argument(
        "--scorer-factory", default=None, metavar="MODULE:CALLABLE",
        help=f"what loads a torch scorer from its config's path (default {BUILTIN_SCORER_FACTORY}); "
        "set here only: a config cannot name code to run",
    )  # fmt: skip
    serve.add_argument("--log-level", default="INFO", type=log_level)
    serve.set_defaults(func=_serve)
    check = commands.add_parser("check-config", help="validate a RouterConfig file and print the problems")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_check)


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds above 0")
    return seconds


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number above 0")
    return number


def _serve(args: argparse.Namespace) -> int:
    from modelpool.routing import server
    from modelpool.routing.scoring import import_factory

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scorer_factory = None
    if args.scorer_factory is not None:
        try:
            scorer_factory = import_factory(args.scorer_factory)
        except Exception as err:  # whatever importing the deployer's module raised: one line
            print(f"error: --scorer-factory {args.scorer_factory}: {err}", file=sys.stderr)
            return 2
    try:
        server.serve(
            args.config, args.host, args.port, args.admin_token_file, args.drain_seconds,
            args.idle_timeout_seconds, scorer_factory=scorer_factory, max_connections=args.max_connections,
        )  # fmt: skip
    except ConfigError as err:
        print(f"error: config {args.config} is not usable: {err}", file=sys.stderr)
        return 2
    return 0


def _check(args: argparse.Namespace) -> int:
    from modelpool.routing.config import load_config_file

    try:
        config = load_config_file(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(f"{problem['field'] or '<config>'}: {problem['message']}", file=sys.stderr)
        return 2
    print(f"ok: pool {config.pool}, generation {config.generation}, mode {config.mode}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m modelpool.routing serve --config ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m modelpool.routing", description="the sidecar router (KServe v2 front for a pool)"
    )
    _add_commands(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))

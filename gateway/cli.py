"""The `mcp-discovery-gateway` command: serve, check. The only place that exits."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from gateway import __version__
from gateway.app import create_app
from gateway.config import FederationConfig
from gateway.errors import ConfigError
from gateway.loader import load_config
from gateway.logs import configure_logging

DEMO_CONFIG = Path(__file__).parent / "demo"
SHUTDOWN_GRACE = 10.0


def demo_state_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mcp-discovery-gateway" / "demo-state"


def _load(args: argparse.Namespace) -> FederationConfig:
    directory = Path(args.config) if args.config else DEMO_CONFIG
    config = load_config(directory)
    gateway = config.gateway
    updates: dict[str, object] = {}
    if getattr(args, "listen", None):
        updates["listen"] = args.listen
    if getattr(args, "state_dir", None):
        updates["state_dir"] = Path(args.state_dir).resolve()
    elif not args.config:
        updates["state_dir"] = demo_state_dir()
    if updates:
        gateway = gateway.model_validate({**gateway.model_dump(), **updates})
        config = config.model_copy(update={"gateway": gateway})
    return config


def public_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


async def _serve(config: FederationConfig) -> None:
    gateway = config.gateway
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, gateway.host or None, gateway.port, shutdown_timeout=SHUTDOWN_GRACE)
    await site.start()
    url = public_url(gateway.host, gateway.port)
    print(f"MCP discovery gateway {__version__} is serving.", flush=True)
    print(f"Give your IDE this MCP registry URL: {url}", flush=True)
    print(f"  (try: curl '{url}/v0.1/servers?limit=3')", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    structlog.get_logger("gateway.cli").info("shutting_down")
    await runner.cleanup()


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"refusing to start, the config has errors:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(config.gateway.log_format, config.gateway.log_level)
    asyncio.run(_serve(config))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    upstreams = ", ".join(u.name for u in config.gateway.upstreams)
    print(f"{config.directory}: OK ({len(config.gateway.upstreams)} upstreams: {upstreams})")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="mcp-discovery-gateway",
        description="Federate MCP registries and serve one governed catalog to IDEs.",
    )
    root.add_argument("--version", action="version", version=__version__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (the offline demo without --config)")
    serve.add_argument("--config", help="a federation_config/ directory (default: bundled demo)")
    serve.add_argument("--listen", help="HOST:PORT, overriding gateway.yaml")
    serve.add_argument(
        "--state-dir", help="where last good catalogs are kept, overriding gateway.yaml"
    )
    serve.set_defaults(run=_cmd_serve)
    check = commands.add_parser("check", help="validate a config directory and exit")
    check.add_argument("--config", help="a federation_config/ directory (default: bundled demo)")
    check.set_defaults(run=_cmd_check)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code

"""The `mcp-discovery-gateway` command: serve, check. The only place that exits."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from gateway import __version__
from gateway.advisories import read_all
from gateway.config import (
    DEFAULT_VIEW,
    FederationConfig,
    VerifySettings,
)
from gateway.diff import Diff, diff_configs
from gateway.diff import render_text as render_diff
from gateway.entry import Entry
from gateway.errors import ConfigError
from gateway.explain import Explanation, explain
from gateway.explain import render_text as render_explain
from gateway.fields import parse_duration
from gateway.loader import load_config
from gateway.logs import configure_logging
from gateway.merge import Source
from gateway.offline import snapshot_from_state, sources_from_state
from gateway.osv import Advisories
from gateway.refresher import Refresher
from gateway.registries.base import Check
from gateway.rendered import list_body
from gateway.schemas import SCHEMA_FILES, config_schemas
from gateway.serve import serve
from gateway.shaping import Lookup, no_lookup
from gateway.snapshot import Snapshot, build_snapshot, view_policies
from gateway.trust import Trust
from gateway.verify import answers
from gateway.view import ViewPolicy

DEMO_CONFIG = Path(__file__).parent / "demo"


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


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"refusing to start, the config has errors:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(config.gateway.log_format, config.gateway.log_level, buffered=True)
    return serve(config, lambda: _load(args), args.workers)


async def _sync_once(config: FederationConfig) -> list[str]:
    async with aiohttp.ClientSession(headers={"User-Agent": "mcp-discovery-gateway"}) as session:
        refresher = Refresher(config, session)
        await refresher.start(background=False)
        await refresher.sync_all()
        return [f"{s.name}: {s.last_error}" for s in refresher.feeds if s.last_error]


def _cmd_sync(args: argparse.Namespace) -> int:
    config = _load(args)
    configure_logging(config.gateway.log_format, config.gateway.log_level)
    failures = asyncio.run(_sync_once(config))
    for failure in failures:
        print(f"sync failed: {failure}", file=sys.stderr)
    print(f"state written to {config.gateway.state_dir}")
    return 1 if failures else 0


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    upstreams = ", ".join(u.name for u in config.gateway.upstreams)
    print(f"{config.directory}: OK ({len(config.gateway.upstreams)} upstreams: {upstreams})")
    return 0


def _offline(
    args: argparse.Namespace,
) -> tuple[FederationConfig, Snapshot, list[Source], Advisories | None]:
    config = _load(args)
    configure_logging(config.gateway.log_format, config.gateway.log_level)  # to stderr
    sources, origins, errors = sources_from_state(config)
    advisories, unread = read_all(config.trust, config.gateway.state_dir)
    for error in [*errors, *unread]:
        print(f"warning: {error}", file=sys.stderr)
    snapshot = build_snapshot(config, sources, origins, datetime.now(UTC), advisories=advisories)
    return config, snapshot, sources, advisories


async def _verify_for(
    config: FederationConfig,
    policies: list[ViewPolicy],
    sources: list[Source],
    name: str,
    now: datetime,
) -> Lookup:
    """Ask the mirrors about this one server's packages (only where verification is on)."""
    if all(policy.verify_mode == "off" and not policy.signing for policy in policies):
        return no_lookup
    checks = {
        check
        for source in sources
        for entry in source.entries
        if entry.name == name
        for policy in policies
        for check in _asked(policy, source.upstream, entry, now)
    }
    return await answers(config.mirrors.verify, config.trust, checks, math.inf)


def _asked(policy: ViewPolicy, upstream: str, entry: Entry, now: datetime) -> tuple[Check, ...]:
    """What the view's mirrors must be asked to decide the entry (its signals too, when a
    rule read them and hid it)."""
    decision = policy.decide(upstream, entry, now)
    if not decision.served and policy.read_of is entry:
        return (*decision.pending, *policy.signal_pending(entry))
    return decision.pending


def _cmd_explain(args: argparse.Namespace) -> int:
    config, _, sources, advisories = _offline(args)
    if args.view and args.view not in [DEFAULT_VIEW, *config.views]:
        print(f"no view named {args.view!r} in {config.directory}", file=sys.stderr)
        return 1
    trust = Trust(detail=True)
    trust.use(advisories)
    policies = view_policies(config, trust)
    now = datetime.now(UTC)
    lookup = asyncio.run(_verify_for(config, policies, sources, args.name, now))
    report = explain(
        config,
        policies,
        sources,
        args.name,
        version=args.version,
        view=args.view,
        now=now,
        lookup=lookup,
        trust=trust,
    )
    if not report.versions:
        if args.json:  # the same shape for a bot; the exit status says nothing was found
            _print_report(report, True, render_explain)
        print(_not_offered(config, sources, report), file=sys.stderr)
        return 1
    _print_report(report, args.json, render_explain)
    return 0


def _not_offered(config: FederationConfig, sources: list[Source], report: Explanation) -> str:
    """One line: nothing to explain, and what the operator may have meant or forgotten."""
    at = f" at version {report.version}" if report.version else ""
    line = f"error: no upstream offers {report.name}{at}"
    if report.reserved_by:
        line += f"; the name is reserved by upstream {report.reserved_by!r} (owns)"
    elif not any(source.entries for source in sources):
        line += (
            f"; {config.gateway.state_dir} holds no upstream data yet "
            "(fill it with: mcp-discovery-gateway sync)"
        )
    return line


class _Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Report)


def _print_report(report: R, as_json: bool, render: Callable[[R], str]) -> None:
    """A report as JSON (`--json`, what users script against) or as text."""
    if as_json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(report))


async def _ask_mirrors(diff: Diff, settings: VerifySettings, deadline: float) -> None:
    """Ask the proposed mirrors about every changed location, `settings.concurrency` at a
    time, for at most `deadline` seconds in all: what is not answered by then is unknown."""
    diff.answer(await answers(settings, None, diff.checks, deadline))


def _cmd_diff(args: argparse.Namespace) -> int:
    current = _load(args)
    try:
        proposed = load_config(args.against)
    except ConfigError as exc:
        print(f"the proposed config has errors:\n{exc}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    state_dir = current.gateway.state_dir
    before, errors = snapshot_from_state(current, state_dir, now)
    after, proposed_errors = snapshot_from_state(proposed, state_dir, now)
    if args.verify and (current.trust.signing() or proposed.trust.signing()):
        # rules on signals decide with what each config's mirrors say: asked, then rebuilt
        configure_logging(current.gateway.log_format, current.gateway.log_level)
        for config in (current, proposed):
            snapshot = before if config is current else after
            asked = answers(
                config.mirrors.verify, config.trust, snapshot.pending, args.verify_timeout
            )
            lookup = asyncio.run(asked)
            rebuilt, _ = snapshot_from_state(config, state_dir, now, lookup)
            before, after = (rebuilt, after) if config is current else (before, rebuilt)
    for error in dict.fromkeys(str(e) for e in [*errors, *proposed_errors]):
        print(f"warning: {error}", file=sys.stderr)
    if not any(len(view) for snapshot in (before, after) for view in snapshot.views.values()):
        print(
            f"warning: no version is served before or after: {state_dir} holds no upstream "
            "data yet (fill it with: mcp-discovery-gateway sync)",
            file=sys.stderr,
        )
    diff = diff_configs(current, before, proposed, after)
    if args.verify:
        # Why a mirror could not answer goes to stderr, as for `sync`; never into the report.
        configure_logging(current.gateway.log_format, current.gateway.log_level)
        asyncio.run(_ask_mirrors(diff, proposed.mirrors.verify, args.verify_timeout))
    _print_report(diff.report, args.json, render_diff)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    config, snapshot, _, _ = _offline(args)
    view = snapshot.views.get(args.view)
    if view is None:
        print(f"no view named {args.view!r} in {config.directory}", file=sys.stderr)
        return 1
    items = list(view.every.items)
    body = list_body(view, items, {"count": len(items)})
    Path(args.out).write_bytes(body)
    print(f"wrote {len(items)} entries of view {args.view!r} to {args.out}")
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    extra = load_config(args.config).policy.extra_registry_types if args.config else []
    schemas = config_schemas(extra)
    if args.out is None:
        print(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode())
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file, schema in schemas.items():
        (out / SCHEMA_FILES[file]).write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2))
        print(f"{file}: {out / SCHEMA_FILES[file]}")
    return 0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    serve.add_argument(
        "--workers", type=int, default=1, help="processes on one port (SO_REUSEPORT); default 1"
    )
    serve.set_defaults(run=_cmd_serve)
    check = commands.add_parser("check", help="validate a config directory and exit")
    check.add_argument("--config", help="a federation_config/ directory (default: bundled demo)")
    check.set_defaults(run=_cmd_check)

    config_help = "a federation_config/ directory (default: bundled demo); reads its state_dir"
    sync = commands.add_parser("sync", help="sync every upstream once into state_dir and exit")
    sync.add_argument("--config", help="a federation_config/ directory (default: bundled demo)")
    sync.add_argument("--state-dir", help="overrides gateway.yaml")
    sync.set_defaults(run=_cmd_sync)

    explain_cmd = commands.add_parser(
        "explain", help="why each version of a server is shown or not"
    )
    explain_cmd.add_argument("name", help="server name, e.g. io.github.acme/weather")
    explain_cmd.add_argument("--version", help="one version only")
    explain_cmd.add_argument("--view", help="one view only")
    explain_cmd.add_argument("--config", help=config_help)
    explain_cmd.add_argument("--state-dir", help="overrides gateway.yaml")
    explain_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    explain_cmd.set_defaults(run=_cmd_explain)

    diff = commands.add_parser("diff", help="dry run: what a proposed config would change")
    diff.add_argument("--config", help="the current config directory (its state_dir is used)")
    diff.add_argument("--against", required=True, help="the proposed config directory")
    diff.add_argument("--state-dir", help="the data to compare on (default: the current config's)")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument(
        "--verify",
        action="store_true",
        help="ask the proposed mirrors whether they have each changed package location",
    )
    diff.add_argument(
        "--verify-timeout",
        type=_duration,
        default="60s",
        help="with --verify: at most this long for every mirror check (default 60s); "
        "checks unanswered by then are unknown",
    )
    diff.set_defaults(run=_cmd_diff)

    export = commands.add_parser("export", help="write a view as an API-shaped list file")
    export.add_argument("--view", default=DEFAULT_VIEW, help="the view (default: the root view)")
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--config", help=config_help)
    export.add_argument("--state-dir", help="overrides gateway.yaml")
    export.set_defaults(run=_cmd_export)

    schema = commands.add_parser("config-schema", help="JSON Schemas of the config files")
    schema.add_argument("--out", help="write one .schema.json per file into this directory")
    schema.add_argument(
        "--config", help="a config directory whose extra_registry_types the schemas allow"
    )
    schema.set_defaults(run=_cmd_config_schema)
    return root


# A reader that stops early (`| head`) ends the command as it ends `cat` or `yes`: killed by
# SIGPIPE, whose exit status shells report as 128 + 13. A script with `set -o pipefail` thus
# tells cut-short output from complete output, as it does for every other command.
BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
    except BrokenPipeError:
        # Whatever is still buffered can never be written: point stdout at /dev/null, so
        # the interpreter's own flush at exit does not complain about it on stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    except ConfigError as exc:
        print(f"the config has errors:\n{exc}", file=sys.stderr)
        return 1
    return code

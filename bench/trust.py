"""Trust rules against none, in-process: the benchmark's scenario (3 upstreams, the 20-rule
policy, 3 views, mirrors) with and without two trust rules in front of the policy (`deny:
{malicious: true}`, `deny: {severity: ">=critical"}`), over an OSV feed naming 3,000 of the
catalog's npm and PyPI packages and 20,000 others; with two npm signal rules instead
(`deny: {signature: invalid}`, `deny: {provenance: invalid}`, trust.yaml's `npm` set); and
with a rule on every signal (`digest` and `scan` too) over npm, PyPI, OCI and mcpb packages
(trust.yaml's `npm`, `pypi`, `oci`, `mcpb`, `scan_receipts`). Every mirror answer known
(signals included), as after the mirrors were asked.

    python -m bench.trust [versions per upstream, default 66667] [rounds, default 5]

Each round is a full rebuild of every view, as after a reload that changes policy.yaml (the
builders keep what they learnt of names and of the feed, as a serving gateway does), one
without trust rules, then one with; then the ratio of the medians (target: at most 1.2x).
Also the first build after a new feed, which reads every version's packages once.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.packing import scenario
from bench.scenario import POLICY
from gateway import compiled
from gateway.config import PolicySettings
from gateway.osv import Advisories, read_feed
from gateway.registries.base import Check, Verdict
from gateway.shaping import Lookup, no_lookup
from gateway.signals import Digest, Provenance, Signals, Signature
from gateway.snapshot import Builder, Snapshot
from gateway.trust_config import TrustSettings

CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"


def feed(snapshot: Snapshot, changed: frozenset[int] = frozenset(), when: int = 0) -> Advisories:
    """3,000 of the served npm and PyPI packages affected (a third of them malware, half of
    them critical) between 0.0.2 and 0.0.6, and 20,000 packages the catalog does not have.
    The records numbered in `changed` affect from 0.0.1 instead (a refresh that changed them);
    every record's `modified` is `when` days into 2026."""
    names = set()
    for item in snapshot.views["default"].every.items:
        for package in orjson.loads(item.registry_meta.entry.server_json).get("packages") or ():
            if package.get("registryType") in ("npm", "pypi"):
                names.add((package["registryType"], package["identifier"]))
    chosen = sorted(names)
    random.Random(5).shuffle(chosen)
    targets = chosen[:3000] + [("npm", f"elsewhere-{i}") for i in range(20_000)]
    records = []
    for index, (kind, name) in enumerate(targets):
        record: dict[str, Any] = {
            "id": f"MAL-2026-{index}" if index % 3 == 0 else f"GHSA-{index:04d}",
            "affected": [{
                "package": {"ecosystem": "npm" if kind == "npm" else "PyPI", "name": name},
                "ranges": [{"type": "ECOSYSTEM",
                            "events": [{"introduced": "0.0.1" if index in changed else "0.0.2"},
                                       {"fixed": "0.0.6"}]}],
            }],
            "modified": f"2026-{1 + when // 28 % 12:02}-{1 + when % 28:02}T00:00:00Z",
        }  # fmt: skip
        if index % 2:
            record["severity"] = [{"type": "CVSS_V3", "score": CRITICAL}]
        records.append(orjson.dumps(record))
    return read_feed(records, frozenset({"npm", "pypi"}), "bench")


class Answers:
    """Every mirror check answered (`available`); with `signed`, signals too (npm alone, or
    with `every` the npm, PyPI, OCI and mcpb ones, with digests): a tenth of the packages with
    an invalid signature, half with verified provenance, mcpb digests that are not the
    entry's. Its `generation` stays the same, as the gateway's mirror answers do until a round
    stores another."""

    generation = 0

    def __init__(self, signed: bool, every: bool = False) -> None:
        self.signed = signed
        self.kinds = ("npm", "pypi", "oci", "mcpb") if every else ("npm",)
        self.now = datetime.now(UTC)
        self.known: dict[Check, Verdict] = {}

    def __call__(self, check: Check) -> Verdict:
        found = self.known.get(check)
        if found is None:
            signals = None
            if self.signed and check.kind in self.kinds:
                spread = zlib.crc32(check.identifier.encode()) % 10
                signature = Signature("verified" if spread else "invalid", "signed by SHA256:k")
                provenance = Provenance("verified" if spread > 4 else "absent", "built by",
                                        "https://github.com/acme/x", "1", "c0ffee")  # fmt: skip
                value = f"sha256:{spread:064x}"
                digest = (
                    Digest("present", "the mirror's bytes", value) if check.kind == "mcpb" else None
                )
                signals = Signals(check.location, "sha512-x",
                                  signature if check.kind in ("npm", "oci") else None,
                                  provenance if check.kind != "mcpb" else None, self.now,
                                  digest, digests=(value,))  # fmt: skip
            found = self.known[check] = Verdict("available", self.now, True, signals)
        return found


def full_rebuild(
    builder: Builder,
    snapshot_inputs: Any,
    advisories: Advisories | None,
    lookup: Lookup = no_lookup,
) -> float:
    sources, origins, now = snapshot_inputs
    builder.release()  # nothing kept: every view decides every entry
    for policy in builder.policies:
        for one in policy.policies:
            one.anew()
    gc.collect()
    started = time.perf_counter()
    builder.build(sources, origins, now, lookup, advisories)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    per_upstream = int(argv[0]) if argv else 66_667
    rounds = int(argv[1]) if len(argv) > 1 else 5
    snapshot, _, config, inputs = scenario(per_upstream)
    advisories = feed(snapshot)
    rules: list[object] = [{"deny": {"malicious": True}}, {"deny": {"severity": ">=critical"}}]
    trusting = config.model_copy(update={
        "policy": PolicySettings.model_validate({**POLICY, "rules": [*rules, *POLICY["rules"]]}),
        "trust": TrustSettings.model_validate(
            {"osv": [{"name": "osv", "file": "x", "ecosystems": ["npm", "pypi"]}]}
        ),
    })  # fmt: skip
    signing = config.model_copy(update={
        "policy": PolicySettings.model_validate({**POLICY, "rules": [
            {"deny": {"signature": "invalid"}}, {"deny": {"provenance": "invalid"}},
            *POLICY["rules"]]}),
        "trust": TrustSettings.model_validate({"npm": {"mirror_keys": True, "trusted_root": "x"}}),
    })  # fmt: skip
    every = config.model_copy(update={
        "policy": PolicySettings.model_validate({**POLICY, "rules": [
            {"deny": {"signature": "invalid"}}, {"deny": {"provenance": "invalid"}},
            {"deny": {"digest": "invalid"}}, {"deny": {"scan": "findings"}}, *POLICY["rules"]]}),
        "trust": TrustSettings.model_validate({
            "npm": {"mirror_keys": True, "trusted_root": "x"}, "pypi": {"trusted_root": "x"},
            "oci": {"trusted_root": "x"}, "mcpb": True, "scan_receipts": True}),
    })  # fmt: skip
    plain, trust, signed = Builder(config), Builder(trusting), Builder(signing)
    everything = Builder(every)
    plain.build(*inputs)
    plain_answers, signed_answers = Answers(False), Answers(True)
    every_answers = Answers(True, every=True)
    signed.build(*inputs, signed_answers)
    everything.build(*inputs, every_answers)
    started = time.perf_counter()
    first = trust.build(*inputs, advisories=advisories)
    first_seconds = time.perf_counter() - started
    hidden = sum(first.hidden["default"].values()) - sum(snapshot.hidden["default"].values())
    times: dict[str, list[float]] = {"without": [], "with": [], "with npm signal": [],
                                     "without (mirrors answered)": [],
                                     "with every signal": []}  # fmt: skip
    for _ in range(rounds):
        times["without"].append(full_rebuild(plain, inputs, None))
        times["with"].append(full_rebuild(trust, inputs, advisories))
        times["without (mirrors answered)"].append(full_rebuild(plain, inputs, None, plain_answers))
        times["with npm signal"].append(full_rebuild(signed, inputs, None, signed_answers))
        times["with every signal"].append(full_rebuild(everything, inputs, None, every_answers))
    without, with_trust, answered, with_signals = (
        statistics.median(times[k])
        for k in ("without", "with", "without (mirrors answered)", "with npm signal")
    )
    print(f"compiled build: {compiled()}; feed: {advisories.records} records; "
          f"the trust rules hide {hidden} more versions in the default view")  # fmt: skip
    for label, values in times.items():
        print(f"full rebuild {label} trust rules, s: " + ", ".join(f"{t:.3f}" for t in values)
              + f" (median {statistics.median(values):.3f})")  # fmt: skip
    print(f"ratio: {with_trust / without:.2f}x (target: at most 1.2x)")
    print(f"npm signal rules, ratio to the same mirror answers without them: "
          f"{with_signals / answered:.2f}x (target: at most 1.2x)")  # fmt: skip
    with_every = statistics.median(times["with every signal"])
    print(f"every signal rule (signature, provenance, digest, scan; npm, PyPI, OCI, mcpb), "
          f"ratio to the same mirror answers without them: {with_every / answered:.2f}x "
          f"(target: at most 1.2x)")  # fmt: skip
    print(
        f"the first build after a new feed (every version's packages read): {first_seconds:.2f} s"
    )
    renewed = Answers(True)  # other answers: every npm version's signals read again
    renewed.generation = 1
    seconds = full_rebuild(signed, inputs, None, renewed)
    print(f"the first build after new mirror answers (every npm version's signals read): "
          f"{seconds:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])

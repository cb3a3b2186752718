"""`serve --workers N` as a process: a worker that fails says why, as one process would."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.test_sharing import _config, _registries

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio]

SEAM = """
import gateway.metrics
def cannot(self):
    raise RuntimeError("the metrics cannot be made (a test's seam)")
gateway.metrics.Metrics.__init__ = cannot
"""


async def test_a_worker_that_fails_to_start_says_why(tmp_path: Path) -> None:
    """Before, the gateway exited 1 with nothing on stderr: each worker's traceback (and
    what it had logged) went with its process."""
    registries = await _registries()
    try:
        config = _config(tmp_path, registries)
        code = f"{SEAM}\nimport sys\nfrom gateway.cli import main\nsys.exit(main(sys.argv[1:]))"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "serve", "--config", str(config), "--workers", "2",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        for registry in registries:
            await registry.stop()
    assert process.returncode == 1
    said = stderr.decode()
    assert said.count("RuntimeError: the metrics cannot be made (a test's seam)") == 2, said
    assert said.count("Traceback (most recent call last)") == 2

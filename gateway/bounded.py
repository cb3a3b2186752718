"""Answers from other hosts (upstream registries, package mirrors), read up to a size: a host
that sends more than it may is never read in full."""

from __future__ import annotations

import aiohttp


async def read_body(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The response's body, or None when it is larger than `cap` bytes (announced or sent)."""
    if (response.content_length or 0) > cap:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)

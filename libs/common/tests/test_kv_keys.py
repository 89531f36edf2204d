"""kv_keys against a real JetStream: the live keys, and no consumer left behind."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NatsClient

from clarin_common.nats import ensure_kv, kv_keys
from clarin_devkit.testing import eventually


async def test_lists_the_live_keys_and_leaves_no_consumer_behind(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    bucket = f"test_keys_{uuid.uuid4().hex[:8]}"
    kv = await ensure_kv(js, bucket)
    try:
        assert await kv_keys(kv) == []  # an empty bucket: no error, no keys

        for key in ("worker-a", "worker-b", "worker-c"):
            await kv.put(key, b"1")
        await kv.put("worker-a", b"2")  # a second revision: still one key
        await kv.delete("worker-b")  # a delete marker is not a key
        assert sorted(await kv_keys(kv)) == ["worker-a", "worker-c"]

        async def no_consumer_left() -> bool:
            info = await js.stream_info(f"KV_{bucket}")
            return info.state.consumer_count == 0

        # nats-py's own keys() leaves each listing's consumer for 5 minutes
        assert await eventually(no_consumer_left, timeout=15, interval=0.5)
    finally:
        await js.delete_key_value(bucket)

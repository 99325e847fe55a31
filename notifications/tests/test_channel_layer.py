"""The channel layer as configured (channels_redis on the real Redis): a consumer whose
socket is idle keeps waiting for events, however long the wait."""

from __future__ import annotations

import asyncio

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers


def test_a_consumer_waiting_longer_than_one_blocking_pop_still_receives_its_event():
    # channels_redis waits with BZPOPMIN for ``brpop_timeout`` (5 s) at a time; redis-py 8
    # reads with a default socket timeout of 5 s too, so a client that gave up first would
    # crash every consumer whose socket was quiet for 5 s.
    async def wait_then_receive() -> dict:
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        try:
            channel = await layer.new_channel()
            waiting = asyncio.create_task(layer.receive(channel))
            await asyncio.sleep(2 * layer.brpop_timeout + 1)
            await layer.send(channel, {"type": "job.progress", "progress": 7})
            return await asyncio.wait_for(waiting, timeout=5)
        finally:
            await layer.close_pools()

    assert asyncio.run(wait_then_receive()) == {"type": "job.progress", "progress": 7}

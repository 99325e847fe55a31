"""The notifications socket through the real ASGI application, channel layer and Redis.

Sockets are opened with a ``WebsocketCommunicator`` (``notifications.tests.communicator``)
against ``config.asgi.application`` (origin check, session auth, routing); events are
sent the way the worker sends them, through ``notifications.push``.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted

from accounts.tests.factories import logged_in_client, make_user
from config.asgi import application
from notifications import push as push_module
from notifications.consumers import CLOSE_SESSION_ENDED, CLOSE_TOO_MANY_MESSAGES, CLOSE_TRY_AGAIN, this_loops_hub
from notifications.hub import SocketHub
from notifications.push import push, user_group
from notifications.tests.communicator import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

QUIET = 0.5  # how long "nothing arrives" is watched for


@pytest.fixture
def logged_in(wait_for_replicas):
    """(user, Client with their session) for each name; the replica has the users before sockets look."""

    def make(*names: str) -> list[tuple]:
        made = []
        for name in names:
            user = make_user(name)
            made.append((user, logged_in_client(user)))
        wait_for_replicas()
        return made

    return make


def socket(client: Client | None = None, origin: bytes = b"http://localhost") -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if client is not None:
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/notifications/", headers=headers)


def scenario(coroutine_function):
    """Run an async test body from a synchronous test (pytest-asyncio is not installed)."""
    return async_to_sync(coroutine_function)()


async def assert_nothing_arrives(communicator: WebsocketCommunicator) -> None:
    if not await communicator.receive_nothing(timeout=QUIET):
        raise AssertionError(f"the socket got {await communicator.receive_output()}")


def progress(job: str = "job-1", percent: int = 40) -> dict:
    return {"type": "job.progress", "job": job, "progress": percent, "state": "running"}


def test_an_anonymous_socket_is_refused():
    async def body():
        connected, _ = await socket().connect()
        assert not connected

    scenario(body)


def test_a_socket_from_another_origin_is_refused(logged_in):
    [(_, client)] = logged_in("alice")

    async def body():
        connected, _ = await socket(client, origin=b"http://evil.example").connect()
        assert not connected

    scenario(body)


def test_a_logged_in_user_receives_their_own_events(logged_in):
    [(alice, client)] = logged_in("alice")

    async def body():
        communicator = socket(client)
        connected, _ = await communicator.connect()
        assert connected
        assert await sync_to_async(push)(alice.pk, progress("abc", 40))
        assert await communicator.receive_json_from(timeout=3) == {
            "type": "job.progress",
            "job": "abc",
            "progress": 40,
            "state": "running",
        }
        notification = {"type": "notification", "id": 7, "title": "Done", "body": "b", "link": "/jobs/", "unread": 1}
        await sync_to_async(push)(alice.pk, notification)
        assert await communicator.receive_json_from(timeout=3) == notification
        await communicator.disconnect()

    scenario(body)


def test_a_user_never_receives_another_users_events(logged_in):
    [(_, alice_client), (bob, bob_client)] = logged_in("alice", "bob")

    async def body():
        alice_socket, bob_socket = socket(alice_client), socket(bob_client)
        assert (await alice_socket.connect())[0] and (await bob_socket.connect())[0]
        await sync_to_async(push)(bob.pk, progress("bobs-job"))
        assert (await bob_socket.receive_json_from(timeout=3))["job"] == "bobs-job"
        await assert_nothing_arrives(alice_socket)
        # A client cannot pick a group: whatever it sends, it stays in its own.
        await alice_socket.send_json_to({"type": "subscribe", "group": user_group(bob.pk)})
        await sync_to_async(push)(bob.pk, progress("bobs-second-job"))
        assert (await bob_socket.receive_json_from(timeout=3))["job"] == "bobs-second-job"
        await assert_nothing_arrives(alice_socket)
        await alice_socket.disconnect()
        await bob_socket.disconnect()

    scenario(body)


def test_a_socket_is_closed_on_the_next_message_once_its_session_logged_out(logged_in):
    [(_, client)] = logged_in("alice")

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        await sync_to_async(client.logout)()
        await communicator.send_to(text_data="ping")
        assert await communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_SESSION_ENDED}

    scenario(body)


def test_a_quiet_socket_is_closed_by_the_periodic_recheck_once_its_session_logged_out(logged_in, monkeypatch):
    [(_, client)] = logged_in("alice")
    monkeypatch.setattr(SocketHub, "recheck_seconds", 0.2)

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        await communicator.send_to(text_data="ping")  # still logged in: stays open
        await assert_nothing_arrives(communicator)
        await sync_to_async(client.logout)()
        assert await communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_SESSION_ENDED}

    scenario(body)


def test_a_socket_whose_session_store_is_down_is_told_to_reconnect_not_that_its_session_ended(logged_in, monkeypatch):
    [(_, client)] = logged_in("alice")

    def store_down(*args, **kwargs):
        error = redis.exceptions.ConnectionError("Error 111 connecting to the state Redis. Connection refused.")
        raise ConnectionInterrupted(connection=None) from error

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        monkeypatch.setattr(DefaultClient, "get", store_down)
        await communicator.send_to(text_data="ping")
        assert await communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN}

    scenario(body)


def test_pushes_reuse_one_redis_connection_instead_of_opening_one_per_message(logged_in):
    [(alice, _)] = logged_in("alice")
    stats = redis.Redis.from_url(settings.REDIS_CHANNELS_URL)
    push(alice.pk, progress())  # the push loop opens its connection

    before = stats.info("stats")["total_connections_received"]
    for percent in range(50):
        assert push(alice.pk, progress(percent=percent))
    after = stats.info("stats")["total_connections_received"]
    # A connection per push would be 50 or more; the slack is for other clients of this Redis.
    assert after - before < 10, "pushes opened new Redis connections"
    assert len(push_module.channel_layer()._layers) == 1  # one event loop's connections, ever

    # What the push loop avoids: async_to_sync(group_send) from a thread, a connection per call.
    layer = get_channel_layer()
    before = stats.info("stats")["total_connections_received"]
    for percent in range(5):
        async_to_sync(layer.group_send)(user_group(alice.pk), progress(percent=percent))
    assert stats.info("stats")["total_connections_received"] - before >= 5


def test_a_push_that_cannot_reach_redis_is_logged_not_raised(monkeypatch, caplog):
    layer = push_module.channel_layer()

    async def unreachable(group, message):
        await asyncio.sleep(0)
        raise ConnectionRefusedError("redis is down")

    monkeypatch.setattr(layer, "group_send", unreachable)
    assert push(1, progress()) is False
    assert "could not push job.progress to user 1" in caplog.text


def test_open_sockets_are_counted_for_the_operations_view(logged_in):
    from prometheus_client import REGISTRY

    [(_, client)] = logged_in("alice")

    def open_sockets() -> float:
        return REGISTRY.get_sample_value("herd_websockets_open", {"replica": settings.HERD_REPLICA_ID}) or 0.0

    async def body():
        before = await sync_to_async(open_sockets)()
        communicator = socket(client)
        connected, _ = await communicator.connect()
        assert connected
        assert open_sockets() == before + 1
        await communicator.disconnect()
        assert open_sockets() == before

    scenario(body)


def test_a_socket_that_sends_too_many_messages_is_closed(logged_in, settings):
    settings.HERD_SOCKET_MESSAGES_PER_MINUTE = 3
    [(_, client)] = logged_in("alice")

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        for _ in range(3):
            await communicator.send_to(text_data="ping")
        await assert_nothing_arrives(communicator)
        await communicator.send_to(text_data="ping")
        closed = await communicator.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": CLOSE_TOO_MANY_MESSAGES}

    scenario(body)


def group_members(user_id: int) -> int:
    layer = push_module.channel_layer()
    return redis.Redis.from_url(settings.REDIS_CHANNELS_URL).zcard(layer._group_key(user_group(user_id)))


def test_a_users_sockets_on_one_process_are_one_member_of_their_group_and_all_get_each_event(logged_in):
    # The hub joins the group once for all of a user's sockets here: one Redis message per
    # event and process, not one per socket (the group of a user with a channel per socket
    # held one member per socket, and each event woke as many receive loops).
    [(alice, client), (_, bob_client)] = logged_in("alice", "bob")

    async def body():
        # Members another process holds for the same user id (an earlier test's replica, whose
        # memberships outlive it in Redis) are not this process's: count from what is there.
        before = await sync_to_async(group_members)(alice.pk)
        sockets = [socket(client) for _ in range(20)]
        for communicator in sockets:
            assert (await communicator.connect())[0]
        bobs = socket(bob_client)
        assert (await bobs.connect())[0]
        assert await sync_to_async(group_members)(alice.pk) == before + 1
        assert await sync_to_async(push)(alice.pk, progress("for-all", 60))
        for communicator in sockets:
            assert (await communicator.receive_json_from(timeout=3))["job"] == "for-all"
        await assert_nothing_arrives(bobs)
        for communicator in sockets[1:]:
            await communicator.disconnect()
        assert await sync_to_async(group_members)(alice.pk) == before + 1  # one socket still open
        assert await sync_to_async(push)(alice.pk, progress("for-one", 70))
        assert (await sockets[0].receive_json_from(timeout=3))["job"] == "for-one"
        await sockets[0].disconnect()
        await bobs.disconnect()
        for _ in range(50):  # the hub leaves the group with the user's last socket, just after
            if await sync_to_async(group_members)(alice.pk) == before:
                break
            await asyncio.sleep(0.05)
        assert await sync_to_async(group_members)(alice.pk) == before

    scenario(body)


def test_the_periodic_recheck_checks_each_session_once_however_many_sockets_it_has(logged_in, monkeypatch):
    [(_, client)] = logged_in("alice")
    monkeypatch.setattr(SocketHub, "recheck_seconds", 0.2)
    checked = []

    async def body():
        sockets = [socket(client) for _ in range(10)]
        for communicator in sockets:
            assert (await communicator.connect())[0]
        found = this_loops_hub()
        original = found.session_check

        async def counting(session_key: str, user_id: int) -> bool:
            checked.append(session_key)
            return await original(session_key, user_id)

        found.session_check = counting
        await asyncio.sleep(0.5)  # two re-checks at least
        assert checked and len(checked) <= 3, checked  # once per round, not once per socket
        await sync_to_async(client.logout)()
        for communicator in sockets:
            assert await communicator.receive_output(timeout=3) == {
                "type": "websocket.close",
                "code": CLOSE_SESSION_ENDED,
            }

    scenario(body)


def test_a_socket_costs_no_thread_hop_to_close_database_connections_per_message(logged_in, monkeypatch):
    # Channels' dispatch runs aclose_old_connections on database_sync_to_async's one thread
    # before every handler; thousands of sockets closing at once queued behind it. The
    # session checks go through database_sync_to_async, which closes them itself.
    import channels.consumer

    [(_, client)] = logged_in("alice")
    hops = []

    async def counted() -> None:
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        await communicator.send_to(text_data="ping")
        await assert_nothing_arrives(communicator)  # still logged in: stays open
        await communicator.disconnect()

    scenario(body)
    assert hops == []


def test_the_hub_renews_its_group_membership_before_channels_redis_expires_it(logged_in, monkeypatch):
    # A user who always has a socket here keeps one join however long: channels-redis drops
    # a member group_expiry (a day) after its group_add unless it is added again.
    [(alice, client)] = logged_in("alice")
    monkeypatch.setattr(SocketHub, "recheck_seconds", 0.2)
    monkeypatch.setattr(SocketHub, "rejoin_seconds", 0.3)
    group = push_module.channel_layer()._group_key(user_group(alice.pk))
    state = redis.Redis.from_url(settings.REDIS_CHANNELS_URL)

    async def body():
        communicator = socket(client)
        assert (await communicator.connect())[0]
        channel = this_loops_hub().channel_of[alice.pk]
        joined = await sync_to_async(state.zscore)(group, channel)
        await asyncio.sleep(1.0)
        assert await sync_to_async(state.zscore)(group, channel) > joined
        await communicator.disconnect()

    scenario(body)


def test_a_socket_whose_client_stops_reading_holds_up_none_of_the_others(logged_in):
    [(alice, client)] = logged_in("alice")

    async def body():
        sockets = [socket(client) for _ in range(5)]
        for communicator in sockets:
            assert (await communicator.connect())[0]
        hub = this_loops_hub()
        stuck = next(iter(hub.sockets[alice.pk]))
        never = asyncio.Event()

        async def blocked_write(message: dict) -> None:
            await never.wait()  # what a full send buffer does to a write

        stuck.base_send = blocked_write
        for job in ("first", "second"):
            assert await sync_to_async(push)(alice.pk, progress(job))
        received = []
        for communicator in sockets:
            try:
                received.append([(await communicator.receive_json_from(timeout=2))["job"] for _ in range(2)])
            except TimeoutError:
                received.append(None)
        assert sorted(received, key=str) == [None] + [["first", "second"]] * 4
        never.set()

    scenario(body)

"""PullConsumer against a real JetStream: batches, ack after commit, poison messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig

from clarin_common.events import (
    WA_EVENTS_STREAM,
    Envelope,
    WaQr,
    WaStatus,
    wa_envelope,
    wa_event_subject,
)
from clarin_common.nats import (
    Delivery,
    PoisonMessage,
    PullConsumer,
    publish_event,
    subject_matches,
)
from clarin_devkit.testing import eventually


def _qr(code: str) -> Envelope[WaQr]:
    expires_at = datetime(2026, 11, 28, 18, 0, 20, tzinfo=UTC)
    return wa_envelope("acc", "dev", "qr", WaQr(code=code, expires_at=expires_at))


async def _pending(nc: NatsClient, durable: str) -> int:
    info = await nc.jetstream().consumer_info(WA_EVENTS_STREAM, durable)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def test_batches_dedupe_and_poison(clean_state: None, nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    subject = wa_event_subject("acc", "dev", "qr")
    seen: list[str] = []
    batches: list[int] = []

    async def handler(batch: list[Delivery]) -> None:
        for d in batch:
            if d.envelope.data["code"] == "poison":
                raise PoisonMessage("cannot be processed")
        batches.append(len(batch))
        seen.extend(d.envelope.data["code"] for d in batch)

    envs = [_qr(f"c{i}") for i in range(50)]
    for env in envs:
        await publish_event(js, subject, env)
    await publish_event(js, subject, envs[0])  # deduplicated by id
    await js.publish(subject, b"{not json")
    await publish_event(js, subject, _qr("poison"))
    await publish_event(js, subject, _qr("after"))

    consumer = PullConsumer(
        js,
        stream=WA_EVENTS_STREAM,
        durable="t1",
        filter_subjects=["wa.evt.*.*.qr"],
        handler=handler,
        batch_size=20,
        fetch_timeout=0.2,
    )
    await consumer.start()
    try:
        await eventually(lambda: "after" in seen)
        assert sorted(seen) == sorted([f"c{i}" for i in range(50)] + ["after"])
        assert max(batches) > 1  # really batched
        await eventually(lambda: _pending_is_zero(nats_client))
    finally:
        await consumer.stop()


async def _pending_is_zero(nc: NatsClient) -> bool:
    return await _pending(nc, "t1") == 0


async def test_failed_handler_is_retried_then_acked(
    clean_state: None, nats_client: NatsClient
) -> None:
    js = nats_client.jetstream()
    subject = wa_event_subject("acc", "dev", "qr")
    attempts = 0
    done = asyncio.Event()

    async def flaky(batch: list[Delivery]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("database briefly down")
        done.set()

    await publish_event(js, subject, _qr("x"))
    consumer = PullConsumer(
        js,
        stream=WA_EVENTS_STREAM,
        durable="t2",
        filter_subjects=["wa.evt.*.*.qr"],
        handler=flaky,
        fetch_timeout=0.2,
    )
    await consumer.start()
    try:
        await asyncio.wait_for(done.wait(), 15)
        assert attempts == 3
        await eventually(lambda: _zero(nats_client, "t2"))
    finally:
        await consumer.stop()


async def _zero(nc: NatsClient, durable: str) -> bool:
    return await _pending(nc, durable) == 0


def test_subject_matching_follows_nats() -> None:
    assert subject_matches("wa.evt.*.*.history", "wa.evt.a.d.history")
    assert not subject_matches("wa.evt.*.*.history", "wa.evt.a.d.status")
    assert not subject_matches("wa.evt.*.*.history", "wa.evt.a.history")
    assert subject_matches("app.>", "app.a.new_message")
    assert not subject_matches("app.>", "app")
    assert not subject_matches("wa.evt.*", "wa.evt.a.b")


async def test_what_a_server_delivers_outside_the_filters_is_acked_not_handled(
    clean_state: None, nats_client: NatsClient
) -> None:
    # a NATS server before 2.10 ignores filter_subjects and delivers the whole stream
    js = nats_client.jetstream()
    await publish_event(js, wa_event_subject("acc", "dev", "qr"), _qr("ours"))
    other = wa_envelope("acc", "dev", "status", WaStatus(status="connecting"))
    await publish_event(js, wa_event_subject("acc", "dev", "status"), other)
    unfiltered = await js.pull_subscribe(">", durable="everything", stream=WA_EVENTS_STREAM)
    msgs = await unfiltered.fetch(2, timeout=5)
    assert len(msgs) == 2
    handled: list[str] = []

    async def handler(batch: list[Delivery]) -> None:
        handled.extend(d.msg.subject for d in batch)

    consumer = PullConsumer(
        js,
        stream=WA_EVENTS_STREAM,
        durable="qr-only",
        filter_subjects=["wa.evt.*.*.qr", "wa.evt.*.*.media"],
        handler=handler,
    )
    await consumer.process(msgs)
    assert handled == [wa_event_subject("acc", "dev", "qr")]

    async def all_acked() -> bool:
        return await _pending(nats_client, "everything") == 0

    await eventually(all_acked)


async def test_an_existing_durable_is_bound_as_it_is_and_its_extra_subjects_skipped(
    clean_state: None, nats_client: NatsClient
) -> None:
    # a durable an older version made without a filter: changing its filter is what
    # NATS 2.9 accepts and then delivers nothing, so it is kept and filtered here
    js = nats_client.jetstream()
    await js.add_consumer(
        WA_EVENTS_STREAM,
        ConsumerConfig(durable_name="kept", ack_policy=AckPolicy.EXPLICIT, max_deliver=-1),
    )
    await publish_event(js, wa_event_subject("acc", "dev", "qr"), _qr("ours"))
    other = wa_envelope("acc", "dev", "status", WaStatus(status="connecting"))
    await publish_event(js, wa_event_subject("acc", "dev", "status"), other)
    handled: list[str] = []

    async def handler(batch: list[Delivery]) -> None:
        handled.extend(d.envelope.type for d in batch)

    consumer = PullConsumer(
        js, stream=WA_EVENTS_STREAM, durable="kept", filter_subjects=["wa.evt.*.*.qr"],
        handler=handler, fetch_timeout=0.2,
    )  # fmt: skip
    await consumer.start()
    try:

        async def all_acked() -> bool:
            return await _pending(nats_client, "kept") == 0

        await eventually(all_acked)
    finally:
        await consumer.stop()
    assert handled == ["qr"]
    info = await js.consumer_info(WA_EVENTS_STREAM, "kept")
    assert info.config.filter_subject is None and not info.config.filter_subjects

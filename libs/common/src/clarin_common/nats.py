"""NATS: connection, JetStream streams, KV buckets, publishing, pull consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import nats
import structlog
from asyncpg.exceptions import DeadlockDetectedError, SerializationError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import BaseModel, ValidationError

from clarin_common.auth_events import (
    AUTH_EVENTS_MAX_AGE_SECONDS,
    AUTH_EVENTS_STREAM,
    AUTH_EVENTS_SUBJECTS,
)
from clarin_common.events import (
    APP_EVENTS_STREAM,
    APP_EVENTS_SUBJECTS,
    MEDIA_BUCKET,
    WA_EVENTS_STREAM,
    WA_EVENTS_SUBJECTS,
    WA_OUTBOX_STREAM,
    WA_OUTBOX_SUBJECTS,
    Envelope,
    RawEnvelope,
)
from clarin_common.net import url_answers
from clarin_common.outage import NatsOutage, is_outage

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_S = 120.0


def redact_url(url: str) -> str:
    """``url`` without the password of any server in it (for logs and errors)."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.password is not None:
            host = split.hostname or ""
            port = f":{split.port}" if split.port else ""
            one = split._replace(netloc=f"{split.username}:***@{host}{port}").geturl()
        parts.append(one)
    return ",".join(parts)


async def connect(
    url: str,
    name: str,
    *,
    timeout: float = 5.0,
    user: str | None = None,
    password: str | None = None,
) -> NatsClient:
    """Connect with endless reconnects. Fails fast (ConnectionError) when nothing
    listens: nats-py's own connect can hang on a closed port. ``user``/``password``
    are the process's NATS role (none for a server without authorization)."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    probes = await asyncio.gather(*(asyncio.to_thread(url_answers, u, 1.0) for u in urls))
    if not any(probes):
        raise ConnectionError(f"NATS does not answer at {redact_url(url)}")

    # a lost server is said once (nats_unavailable), not at every reconnect attempt
    outage = NatsOutage(f"nats:{name}")

    async def _quiet(exc: Exception) -> None:
        if is_outage(exc) or outage.down:
            outage.failed(exc)
        else:
            log.warning("nats_error", error=str(exc))

    client: list[NatsClient] = []

    async def _disconnected() -> None:
        # a deliberate close/drain also fires this callback: only warn on a real loss
        if client and (client[0].is_closed or client[0].is_draining):
            return
        outage.failed("disconnected")

    async def _reconnected() -> None:
        outage.ok()

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=urls,
                name=name,
                connect_timeout=2,
                reconnect_time_wait=1,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=_quiet,
                disconnected_cb=_disconnected,
                reconnected_cb=_reconnected,
                pending_size=64 * 1024 * 1024,
                **({"user": user, "password": password} if user else {}),
            ),
            timeout,
        )
    except TimeoutError as exc:
        raise ConnectionError(f"NATS connect to {redact_url(url)} timed out") from exc
    client.append(nc)
    return nc


async def ensure_streams(js: JetStreamContext) -> None:
    """Create or update the streams of API.md (idempotent, safe in parallel)."""
    streams = [
        StreamConfig(
            name=WA_EVENTS_STREAM,
            subjects=[WA_EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=APP_EVENTS_STREAM,
            subjects=[APP_EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=24 * 3600,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        ),
        # sends waiting for their device: each is taken (and removed) once
        StreamConfig(
            name=WA_OUTBOX_STREAM,
            subjects=[WA_OUTBOX_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=30 * 24 * 3600,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=AUTH_EVENTS_STREAM,
            subjects=[AUTH_EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=AUTH_EVENTS_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        ),
    ]
    for config in streams:
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except Exception:  # created by a replica in the meantime
                await js.update_stream(config)


async def ensure_kv(js: JetStreamContext, bucket: str, ttl: float | None = None) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(
                KeyValueConfig(bucket=bucket, ttl=ttl, history=1, storage=StorageType.FILE)
            )
        except Exception:
            return await js.key_value(bucket)


# how long the server keeps a key listing's consumer once nobody reads it
LISTING_CONSUMER_TTL_S = 2.0


async def kv_keys(kv: KeyValue) -> list[str]:
    """The keys of ``kv`` that hold a value (``[]`` when there are none).

    What ``KeyValue.keys`` does, without its cost on the server: nats-py lists the
    keys through an ordered consumer with a 5-minute inactivity threshold, and
    stopping the watcher leaves that consumer on the server for those 5 minutes
    (the soak saw ≈ 320 such consumers on the workers' membership bucket at every
    moment, read once a second). This one asks the server to drop the consumer
    ``LISTING_CONSUMER_TTL_S`` after the listing."""
    watcher = await kv.watchall(
        ignore_deletes=True, meta_only=True, inactive_threshold=LISTING_CONSUMER_TTL_S
    )
    keys: list[str] = []
    try:
        async for entry in watcher:
            if entry is None:  # the end of what the bucket held
                break
            keys.append(entry.key)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return keys


async def ensure_object_store(js: JetStreamContext, bucket: str = MEDIA_BUCKET) -> ObjectStore:
    try:
        return await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        try:
            return await js.create_object_store(
                bucket, ObjectStoreConfig(storage=StorageType.FILE, ttl=7 * 24 * 3600)
            )
        except Exception:
            return await js.object_store(bucket)


async def confirm_subscriptions(nc: NatsClient, timeout: int = 2) -> None:
    """Return once the server has every subscription made so far, so that a publish
    or request sent right after reaches them.

    Twice: nats-py writes a flush's PING straight to the socket while new SUBs
    wait in its pending buffer for the flusher task, so the first PONG can come
    back before the server has the SUBs; the second PING goes out after them.
    """
    await nc.flush(timeout=timeout)
    await nc.flush(timeout=timeout)


def encode(envelope: Envelope[Any] | BaseModel) -> bytes:
    return envelope.model_dump_json().encode()


async def publish_event(js: JetStreamContext, subject: str, envelope: Envelope[Any]) -> None:
    """Publish to a stream with the envelope id as ``Nats-Msg-Id`` (deduplicated)."""
    await js.publish(subject, encode(envelope), headers={"Nats-Msg-Id": envelope.id})


async def publish_events(js: JetStreamContext, items: Sequence[tuple[str, Envelope[Any]]]) -> None:
    """Publish many events concurrently and wait for every stream ack."""
    await asyncio.gather(*(publish_event(js, subject, env) for subject, env in items))


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never be processed."""


def subject_mismatch(subject: str, envelope: RawEnvelope) -> str | None:
    """Why an envelope does not belong on its subject, or None when it does.

    ``wa.evt.{account}.{device}.{kind}`` must carry that account, device and
    kind; ``app.{account}.{type}`` and ``auth.{account}.{type}`` that account and
    type. A publisher allowed on one subject cannot speak for another tenant by
    writing a different account into the payload.
    """
    parts = subject.split(".")
    if parts[:2] == ["wa", "evt"] and len(parts) == 5:
        account, device, kind = parts[2], parts[3], parts[4]
        if envelope.account_id != account:
            return "account"
        if envelope.device_id != device:
            return "device"
        if envelope.type != kind:
            return "type"
        return None
    if parts[0] in ("app", "auth") and len(parts) == 3:
        if envelope.account_id != parts[1]:
            return "account"
        if envelope.type != parts[2]:
            return "type"
        return None
    return None


@dataclass
class Delivery:
    msg: Msg
    envelope: RawEnvelope

    @property
    def num_delivered(self) -> int:
        try:
            return int(self.msg.metadata.num_delivered)
        except Exception:
            return 1


# subjects whose filter match a consumer remembers
_MATCH_CACHE = 100_000

BatchHandler = Callable[[list[Delivery]], Awaitable[None]]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


class PullConsumer:
    """A durable JetStream pull consumer that hands batches to ``handler``.

    The handler commits its work (one transaction per batch); only then are the
    messages acked. A message that does not parse, or that fails on its own
    with :class:`PoisonMessage` or after ``max_attempts`` deliveries, is
    ``term()``-ed and logged instead of being retried forever.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subjects: list[str],
        handler: BatchHandler,
        batch_size: int = 500,
        fetch_timeout: float = 1.0,
        ack_wait: float = 30.0,
        max_attempts: int = 5,
        overlap: int = 1,
    ) -> None:
        self.js = js
        self.stream = stream
        self.durable = durable
        self.filter_subjects = filter_subjects
        self.handler = handler
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self.max_attempts = max_attempts
        # batches in hand at once; handlers that need ordering take turns themselves
        self.overlap = overlap
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.outage = NatsOutage(f"consumer:{durable}")
        self._matched: dict[str, bool] = {}

    async def _subscription(self) -> Any:
        # one filter goes as filter_subject, which every server knows; several as
        # filter_subjects, which servers before 2.10 ignore: process() then skips
        # what is not ours, so the consumer behaves the same on either
        one = self.filter_subjects[0] if len(self.filter_subjects) == 1 else None
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=20_000,
            filter_subject=one,
            filter_subjects=None if one is not None else self.filter_subjects,
        )
        try:
            existing = await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            existing = None
        if existing is None:
            try:
                await self.js.add_consumer(self.stream, config)
            except Exception as exc:  # another replica made it first
                log.info("consumer_exists", durable=self.durable, detail=str(exc))
        elif (existing.config.filter_subject, existing.config.filter_subjects) != (
            config.filter_subject,
            config.filter_subjects,
        ):
            # an existing durable is bound as it is: NATS 2.9 accepts a changed filter
            # and then delivers nothing; process() skips what is not ours
            log.info("consumer_kept", durable=self.durable, filter=existing.config.filter_subject)
        return await self.js.pull_subscribe_bind(self.durable, self.stream)

    async def start(self) -> None:
        self._sub = await self._subscription()
        self._task = asyncio.create_task(self._run(self._sub), name=f"consumer:{self.durable}")

    async def stop(self) -> None:
        """Finish the batches in hand, then stop fetching and drop the subscription
        (else the answer to a cancelled fetch keeps ``nc.drain()`` waiting)."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self.ack_wait)
            except TimeoutError:
                pass
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._sub is not None:
            with contextlib.suppress(Exception):  # already gone with the connection
                await self._sub.unsubscribe()
            self._sub = None

    async def _fetch(self, sub: Any) -> list[Msg]:
        try:
            msgs: list[Msg] = await sub.fetch(self.batch_size, timeout=self.fetch_timeout)
        except (NatsTimeoutError, TimeoutError):
            # an idle stream, or a server away (the request waits in the buffer)
            if self.js._nc.is_connected:
                self.outage.ok()
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_outage(exc):
                self.outage.failed(exc)
            else:
                log.warning("consumer_fetch_failed", durable=self.durable, error=str(exc))
            await asyncio.sleep(1)
            return []
        self.outage.ok()
        return msgs

    async def _run(self, sub: Any) -> None:
        """Fetch the next batch while the current one is handled, so the NATS round
        trip overlaps the wait on PostgreSQL instead of adding to it."""
        ahead: asyncio.Task[list[Msg]] | None = None
        handling: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                if ahead is None:
                    ahead = asyncio.create_task(self._fetch(sub))
                msgs = await ahead
                ahead = None
                if not msgs:
                    continue
                while len(handling) >= self.overlap:
                    await asyncio.wait(handling, return_when=asyncio.FIRST_COMPLETED)
                if not self._stopping.is_set():
                    ahead = asyncio.create_task(self._fetch(sub))
                self._idle.clear()
                task = asyncio.create_task(self._handle(msgs))
                handling.add(task)
                task.add_done_callback(lambda t: self._done(handling, t))
            if handling:
                await asyncio.wait(handling)
        finally:
            if ahead is not None:
                ahead.cancel()
                # a batch fetched but not handled: hand it back at once
                if ahead.done() and not ahead.cancelled() and ahead.exception() is None:
                    for msg in ahead.result():
                        with contextlib.suppress(Exception):
                            await msg.nak()
            for task in handling:
                task.cancel()

    async def _handle(self, msgs: list[Msg]) -> None:
        try:
            await self.process(msgs)
        except Exception:
            log.exception("consumer_batch_crashed", durable=self.durable)

    def _done(self, handling: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        handling.discard(task)
        if not handling:
            self._idle.set()

    async def process(self, msgs: list[Msg]) -> None:
        deliveries: list[Delivery] = []
        for msg in msgs:
            if not self._ours(msg.subject):
                # a server that ignored our filters (before 2.10), or a durable made
                # with none: not ours, and nothing to retry
                await msg.ack()
                continue
            try:
                envelope = RawEnvelope.model_validate_json(msg.data)
            except (ValueError, ValidationError) as exc:
                log.error(
                    "poison_message_terminated",
                    durable=self.durable,
                    subject=msg.subject,
                    reason=str(exc)[:500],
                )
                await msg.term()
                continue
            mismatch = subject_mismatch(msg.subject, envelope)
            if mismatch is not None:
                log.error(
                    "event_subject_mismatch_terminated",
                    durable=self.durable,
                    subject=msg.subject,
                    event_id=envelope.id,
                    field=mismatch,
                )
                await msg.term()
                continue
            deliveries.append(Delivery(msg, envelope))
        if not deliveries:
            return
        try:
            await self._handle_batch(deliveries)
        except Exception as exc:
            if len(deliveries) == 1:
                await self._settle_failure(deliveries[0], exc)
                return
            log.warning(
                "batch_failed_retrying_one_by_one", durable=self.durable, error=str(exc)[:300]
            )
            for delivery in deliveries:
                try:
                    await self.handler([delivery])
                except Exception as one_exc:
                    await self._settle_failure(delivery, one_exc)
                else:
                    await delivery.msg.ack()
            return
        # one after the other: each ack is a buffered publish, no task per message
        for delivery in deliveries:
            await delivery.msg.ack()

    def _ours(self, subject: str) -> bool:
        """Whether a subject matches the filters (cached: a stream has few subjects
        per account and device, and they come back batch after batch)."""
        ours = self._matched.get(subject)
        if ours is None:
            ours = not self.filter_subjects or any(
                subject_matches(f, subject) for f in self.filter_subjects
            )
            if len(self._matched) >= _MATCH_CACHE:
                self._matched.clear()
            self._matched[subject] = ours
        return ours

    async def _handle_batch(self, deliveries: list[Delivery]) -> None:
        """The handler on the whole batch; a deadlock or serialization failure is
        retried as a batch (with jitter) before falling back to one by one."""
        for attempt in range(3):
            try:
                await self.handler(deliveries)
                return
            except (DeadlockDetectedError, SerializationError) as exc:
                if attempt == 2:
                    raise
                log.warning("batch_conflict_retrying", durable=self.durable, error=str(exc)[:200])
                await asyncio.sleep(random.uniform(0.05, 0.3) * (attempt + 1))

    async def _settle_failure(self, delivery: Delivery, exc: Exception) -> None:
        if isinstance(exc, PoisonMessage) or delivery.num_delivered >= self.max_attempts:
            log.error(
                "poison_message_terminated",
                durable=self.durable,
                subject=delivery.msg.subject,
                event_id=delivery.envelope.id,
                attempts=delivery.num_delivered,
                reason=str(exc)[:500],
            )
            await delivery.msg.term()
        else:
            log.warning(
                "message_failed_will_retry",
                durable=self.durable,
                event_id=delivery.envelope.id,
                attempts=delivery.num_delivered,
                error=str(exc)[:300],
            )
            await delivery.msg.nak(delay=min(2.0**delivery.num_delivered, 30.0))


async def request_json(
    nc: NatsClient, subject: str, payload: BaseModel | dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    """Request/reply with JSON; raises ``nats.errors.NoRespondersError`` when no one
    listens and ``nats.errors.TimeoutError`` on timeout."""
    data = (
        payload.model_dump_json().encode()
        if isinstance(payload, BaseModel)
        else json.dumps(payload).encode()
    )
    reply = await nc.request(subject, data, timeout=timeout)
    result = json.loads(reply.data)
    assert isinstance(result, dict)
    return result

"""The Signal channel end to end against the fake signal-cli-rest-api."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.channels.signal import Crash
from bot.logs import setup_logging
from storage.models import Attachment, Case, QueueItem
from tests.fake_signal import NUMBER, load_swagger
from tests.fake_telegram import until
from tests.helpers import CANARY
from tests.signal_harness import SignalHarness
from tests.telegram_harness import EXECUTABLE, jpeg_with_gps

UUID = "3f2b8c1e-5d4a-4b6f-9a7e-2c1d0e9f8a7b"
PHONE = "+994501112233"
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
if load_swagger() is None:
    pytest.skip(
        "../shared/contracts/signal-cli-rest-api.swagger.json is absent", allow_module_level=True
    )

#: Numbered answers of a whole report (detained right now), the canary in every text step.
REPORT = [
    "start",
    "3",
    "1",
    "2",
    "1",
    f"Station 4 {CANARY}",
    "1",
    "1",
    f"Binagadi {CANARY}",
    "1,2",
    "2",
    "2",
    "1",
    f"Words {CANARY}",
    "1",
    "2",
    "1",
]


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    harness = SignalHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def cases(h: SignalHarness) -> int:
    async with h.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Case))).scalar_one())


async def test_full_report_over_signal(sig: SignalHarness) -> None:
    for text in REPORT:
        await sig.say(UUID, text, PHONE)
    assert await cases(sig) == 1
    texts = sig.fake.to(UUID)
    assert texts[0].startswith("Hello.")
    assert any("0 = Stop and delete" in t for t in texts), "numbered options, 0 stops"
    assert CODE.search(texts[-1]), "the receipt"
    assert texts[-1].endswith("\n\n1 = I have written it down"), "a numbered option"
    assert all(CANARY not in t for t in texts), "typed words never echoed"
    assert sig.fake.expirations == {UUID: 86400}, "disappearing messages for the conversation"
    assert sig.fake.invalid == [], "every request follows the swagger schemas"


async def test_null_source_number_is_keyed_by_uuid(sig: SignalHarness) -> None:
    await sig.say(UUID, "start", None)
    await sig.say(UUID, "3", None)
    assert sig.fake.to(UUID)[-1].startswith("This is a confidential tip line")
    assert sig.fake.invalid == []


async def test_restart_between_receive_and_handling_loses_nothing(tmp_path: Path) -> None:
    h = SignalHarness(tmp_path)
    await h.start_all()
    try:
        await h.say(UUID, "start")
        await h.stop_bot()

        def crash() -> None:
            raise Crash

        await h.start_bot(after_store=crash)
        await h.fake.deliver(h.fake.envelope(UUID, "3"))
        assert h._task is not None
        with pytest.raises(Crash):
            await asyncio.wait_for(h._task, 15)
        await h.api.aclose()
        assert h.fake.inbox == [], "signal-cli handed it over already"
        async with h.db.connect() as conn:
            assert (
                await conn.execute(select(func.count()).select_from(QueueItem))
            ).scalar_one() == 1
        sent_before = len(h.fake.to(UUID))
        await h.start_bot()  # drains the encrypted inbox first
        await until(lambda: len(h.fake.to(UUID)) > sent_before)
        assert h.fake.to(UUID)[-1].startswith("This is a confidential tip line")
        # the channel removes the inbox and outbox entries just after the send returns
        left = -1
        for _ in range(500):
            async with h.db.connect() as conn:
                left = (
                    await conn.execute(select(func.count()).select_from(QueueItem))
                ).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.01)
        assert left == 0
    finally:
        await h.stop_all()


async def test_failed_sends_are_retried_and_arrive_once(sig: SignalHarness) -> None:
    sig.fake.fail_sends = [500, 429, 503]
    await sig.say(UUID, "start")
    assert sig.fake.to(UUID) == [], "nothing got through yet"
    assert sig.channel is not None
    for _ in range(4):
        sig.clock.advance(timedelta(minutes=10))
        await sig.channel.flush()
    texts = sig.fake.to(UUID)
    assert len(texts) == 2 and texts[0].startswith("Hello.") and "confidential" not in texts[0]
    assert len(set(texts)) == 2, "each message exactly once, in order"
    async with sig.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(QueueItem))).scalar_one() == 0


async def test_attachments_are_deleted_from_the_server(sig: SignalHarness) -> None:
    for text in REPORT[:14]:
        await sig.say(UUID, text)
    photo = sig.fake.attach(jpeg_with_gps("EXIF"), "image/jpeg")
    exe = sig.fake.attach(EXECUTABLE, "image/jpeg", "photo.jpg")
    await sig.say(UUID, f"caption {CANARY}", attachments=[photo])
    assert sig.fake.to(UUID)[-2] == "File received (1). Send another, or continue."
    await sig.say(UUID, None, attachments=[exe])
    assert sig.fake.to(UUID)[-2].startswith("This file cannot be accepted.")
    assert sig.fake.attachments == {}, "nothing stays on the signal-cli server"
    assert sorted(sig.fake.deleted_attachments) == sorted([photo["id"], exe["id"]])
    async with sig.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Attachment))).scalar_one() == 1


async def test_canary_number_and_uuid_never_on_disk_or_in_logs(
    sig: SignalHarness, caplog: pytest.LogCaptureFixture
) -> None:
    setup_logging("DEBUG")
    caplog.set_level(logging.DEBUG)
    for text in REPORT:
        await sig.say(UUID, text, PHONE)
    files = {p.name: p.read_bytes() for p in sig.tmp_path.iterdir() if p.is_file()}
    for name, data in files.items():
        for secret in (CANARY, PHONE, UUID):
            assert secret.encode() not in data, (secret, name)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records
    for secret in (CANARY, PHONE, UUID, NUMBER):
        assert secret not in text


async def test_changed_safety_number_trusted_for_reporters_not_for_lawyers(
    sig: SignalHarness,
) -> None:
    sig.fake.untrusted.add(UUID)
    await sig.say(UUID, "start")
    assert sig.fake.trusted == [UUID] and sig.fake.to(UUID), "reporters: trust on first use"
    lawyer_uuid = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    lawyer_id, code = await sig.lawyers.invite(name="L", languages=["en"], regions=["all"])
    await sig.say(lawyer_uuid, f"/register {code}")
    phrase = sig.fake.to(lawyer_uuid)[-1].split("\n\n")[1]
    await sig.lawyers.verify(lawyer_id, phrase)
    sig.fake.untrusted.add(lawyer_uuid)
    await sig.say(lawyer_uuid, "/cases")
    assert lawyer_uuid not in sig.fake.trusted, "never silently for a lawyer"
    roster = await sig.lawyers.roster()
    assert roster[0].status == "suspended"
    await sig.say(lawyer_uuid, "/cases")
    assert sig.fake.invalid == []


async def test_json_rpc_mode_reconnects_and_drops_while_nobody_listens(tmp_path: Path) -> None:
    h = SignalHarness(tmp_path, mode="json-rpc")
    await h.start_all()
    try:
        await h.say(UUID, "start")
        assert h.fake.to(UUID)[0].startswith("Hello.")
        socket = h.fake.sockets[0]
        await socket.close()
        await h.fake.deliver(h.fake.envelope(UUID, "lost while disconnected"))
        await until(lambda: bool(h.fake.sockets) and h.fake.sockets[0] is not socket)
        assert h.fake.dropped >= 1
        assert h.channel is not None and h.channel.reconnects >= 1
        await h.say(UUID, "3")
        assert h.fake.to(UUID)[-1].startswith("This is a confidential tip line")
    finally:
        await h.stop_all()


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
envelope_extras = st.fixed_dictionaries(
    {},
    optional={
        "sourceUuid": st.one_of(st.none(), st.text(max_size=40), st.integers()),
        "dataMessage": st.one_of(
            st.none(),
            st.integers(),
            st.fixed_dictionaries(
                {"timestamp": st.integers(0, 2**40)},
                optional={
                    "message": st.one_of(st.none(), st.text(max_size=200), st.integers()),
                    "groupInfo": st.just({"groupId": "g"}),
                    "attachments": st.lists(
                        st.fixed_dictionaries(
                            {}, optional={"id": st.text(max_size=8), "size": st.integers(-1, 2**30)}
                        ),
                        max_size=2,
                    ),
                },
            ),
        ),
        "receiptMessage": st.just(
            {"when": 1, "isDelivery": True, "isRead": False, "isViewed": False}
        ),
        "typingMessage": st.just({"timestamp": 1, "action": "STARTED"}),
    },
)


@FUZZ
@given(extras=envelope_extras, text=st.text(max_size=300))
async def test_fuzzed_envelopes_and_text_never_crash(
    sig: SignalHarness, extras: dict[str, object], text: str
) -> None:
    assert sig.channel is not None
    message = sig.fake.envelope(UUID, text)
    message["envelope"].update(extras)  # type: ignore[union-attr]
    await sig.channel.ingest(message)
    await sig.channel.ingest({"weird": [1, 2]})
    assert sig.channel.failed == 0
    assert all("Traceback" not in t for t in sig.fake.to(UUID))


async def test_tipline_run_serves_signal(tmp_path: Path) -> None:
    """`tipline run` with TIPLINE_SIGNAL_API_URL and TIPLINE_SIGNAL_NUMBER set."""
    from tests.fake_signal import FakeSignalApi
    from tests.helpers import TiplineProcess

    fake = FakeSignalApi()
    root = await fake.start()
    try:
        async with TiplineProcess(
            tmp_path, TIPLINE_SIGNAL_API_URL=root, TIPLINE_SIGNAL_NUMBER=NUMBER
        ) as run:
            await until(lambda: ("GET", "/v1/receive") in fake.calls, limit=30)
            await fake.deliver(fake.envelope(UUID, "start", PHONE))
            await until(lambda: len(fake.to(UUID)) >= 2, limit=30)
            assert fake.to(UUID)[-1].startswith("Choose your language.")
    finally:
        await fake.stop()
    assert run.returncode == 0, run.logs
    for secret in ("Traceback", PHONE, UUID, NUMBER):
        assert secret not in run.logs, run.logs[-3000:]

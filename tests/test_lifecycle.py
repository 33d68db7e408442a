"""Issue 11 in this process: locked start, unlock, lock, throttled guesses, the socket's peer
check, the health endpoint, webhook and Signal while locked, and ``runtime.request_lock``."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import weakref
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import insert

from bot.control import Throttle
from storage.models import OutboxItem
from tests.conftest import START
from tests.fake_signal import NUMBER, FakeSignalApi, load_swagger
from tests.fake_telegram import TOKEN, FakeBotApi, until
from tests.service_harness import (
    PASSPHRASE,
    Monotonic,
    ask,
    free_port,
    make_instance,
    settings_for,
    supervised,
)

CHAT = 6120347
NOBODY = 65534


def polls(fake: FakeBotApi) -> int:
    return sum(1 for method, _ in fake.calls if method == "getUpdates")


async def test_lock_stops_polling_at_once_and_the_keyring_is_gone(tmp_path: Path) -> None:
    fake = FakeBotApi()
    root = await fake.start()
    settings = settings_for(tmp_path, telegram_token=TOKEN, telegram_base_url=root)
    await make_instance(settings)
    try:
        async with supervised(settings) as service:
            assert (await ask(settings, "status"))["state"] == "locked"
            mode = settings.effective_control_socket.stat().st_mode
            assert stat.S_ISSOCK(mode) and mode & 0o777 == 0o600
            answer = await ask(settings, "unlock", passphrase=PASSPHRASE)
            assert answer == {"ok": True, "state": "unlocked"}
            await until(lambda: polls(fake) > 0)
            await fake.text(CHAT, "/start")
            await until(lambda: any(s.chat_id == CHAT and s.reply_markup for s in fake.sent))

            assert service.runtime is not None
            keyring = service.runtime.vault.keyring
            gone = weakref.ref(keyring)
            kek = keyring.keks[keyring.current_kek_id].key
            index_key = keyring.index_key
            assert any(kek) and any(index_key)
            del keyring

            began = time.monotonic()
            assert await ask(settings, "lock") == {"ok": True, "state": "locked"}
            assert time.monotonic() - began < 2.0, "polling must stop within 2 seconds"
            after = polls(fake)
            await asyncio.sleep(0.5)
            assert polls(fake) == after, "no getUpdates once locked"
            assert service.runtime is None
            assert kek == bytearray(len(kek)) and index_key == bytearray(len(index_key))
            gc.collect()
            assert gone() is None, gc.get_referrers(gone()) if gone() is not None else ""
            assert (await ask(settings, "status"))["channels"] == {"telegram": "down"}

            # unlocking again brings the same data back
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
            before = (len(fake.sent), fake.edits)
            await fake.text(CHAT, "/start")
            await until(lambda: (len(fake.sent), fake.edits) != before)
    finally:
        await fake.stop()


async def test_wrong_passphrases_stay_locked_and_are_slowed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await make_instance(settings)
    clock = Monotonic()
    async with supervised(settings, monotonic=clock) as service:
        for _ in range(5):
            answer = await ask(settings, "unlock", passphrase="not the passphrase at all")
            assert answer["ok"] is False and answer["state"] == "locked"
            assert answer["error"] == "wrong passphrase: tipline stays locked"
        # the sixth try waits a minute, even with the right passphrase
        answer = await ask(settings, "unlock", passphrase=PASSPHRASE)
        assert answer["error"] == "too many wrong passphrases: try again in 60 seconds"
        clock.now += 59
        answer = await ask(settings, "unlock", passphrase=PASSPHRASE)
        assert answer["error"] == "too many wrong passphrases: try again in 1 seconds"
        clock.now += 1
        answer = await ask(settings, "unlock", passphrase="still not the passphrase")
        assert answer["error"] == "wrong passphrase: tipline stays locked"
        answer = await ask(settings, "unlock", passphrase=PASSPHRASE)
        assert "try again in 60 seconds" in answer["error"]
        clock.now += 60
        assert await ask(settings, "unlock", passphrase=PASSPHRASE) == {
            "ok": True,
            "state": "unlocked",
        }
        assert service.throttle.failures == 0
        # bad requests are refused calmly and change nothing
        assert (await ask(settings, "unlock"))["error"] == "no passphrase was given"
        assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["error"] == (
            "already unlocked"
        )
        assert (await ask(settings, "dance"))["error"] == "unknown request 'dance'"
        assert (await ask(settings, "status"))["state"] == "unlocked"


def test_throttle_counts_only_failures_in_a_row() -> None:
    clock = Monotonic()
    throttle = Throttle(clock, free=5, interval=60)
    for _ in range(4):
        throttle.failed()
    assert throttle.wait() == 0
    throttle.succeeded()
    for _ in range(5):
        throttle.failed()
    assert throttle.wait() == 60
    clock.now += 61
    assert throttle.wait() == 0


def _peer_as(uid: int, path: Path) -> dict[str, object]:
    """Fork a child that drops to ``uid``, connects and asks to lock; what it saw."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, only the socket module, then _exit
        result: dict[str, object]
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                except PermissionError:
                    result = {"connect": "EACCES"}
                else:
                    sock.sendall(json.dumps({"op": "lock"}).encode() + b"\n")
                    answer = json.loads(sock.makefile().readline())
                    result = {"connect": "ok", "answer": answer}
        except Exception as exc:
            result = {"child failed": repr(exc)}
        finally:
            os.write(write_end, json.dumps(result).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a child under another uid")
async def test_socket_refuses_another_uid(tmp_path: Path) -> None:
    # A directory another user may enter, so that the peer check itself is what refuses.
    shared = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)
        settings = settings_for(tmp_path, control_socket=shared / "control.sock")
        await make_instance(settings)
        async with supervised(settings) as service:
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]

            path = settings.effective_control_socket
            # the socket file is 0600: another user cannot even connect
            assert await asyncio.to_thread(_peer_as, NOBODY, path) == {"connect": "EACCES"}
            # with the file opened up, SO_PEERCRED still refuses the other uid
            os.chmod(path, 0o666)
            answer = await asyncio.to_thread(_peer_as, NOBODY, path)
            assert answer == {
                "connect": "ok",
                "answer": {"ok": False, "error": "refused: not this service's user"},
            }
            assert service.control.refused == 1
            assert service.state == "unlocked", "a refused peer changes nothing"
    finally:
        shutil.rmtree(shared)


async def test_health_endpoint_says_locked_or_unlocked_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(tmp_path, health_addr=f"127.0.0.1:{port}")
    await make_instance(settings)
    url = f"http://127.0.0.1:{port}"
    async with supervised(settings), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"state": "locked"}
        assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
        async with http.get(f"{url}/healthz") as response:
            assert await response.json() == {"state": "unlocked"}
        for other in ("/", "/status", "/healthz/keys"):
            async with http.get(f"{url}{other}") as response:
                assert response.status == 404
        assert (await ask(settings, "lock"))["ok"]
        async with http.get(f"{url}/healthz") as response:
            assert await response.json() == {"state": "locked"}


async def test_webhook_answers_503_while_locked_and_nothing_is_lost(tmp_path: Path) -> None:
    fake = FakeBotApi()
    root = await fake.start()
    port = free_port()
    hook = f"http://127.0.0.1:{port}/tg-{os.urandom(4).hex()}"
    secret = "locked-test-secret_1"
    settings = settings_for(
        tmp_path,
        telegram_token=TOKEN,
        telegram_base_url=root,
        telegram_webhook_url=hook,
        telegram_webhook_secret=secret,
        telegram_webhook_port=port,
    )
    await make_instance(settings)
    try:
        async with supervised(settings):
            # what Telegram does with an update while tipline is locked
            fake.webhook_url, fake.webhook_secret = hook, secret
            update = await fake.text(CHAT, "/start")
            assert fake.webhook_statuses == [503]
            assert fake.calls == [], "locked: not one call to the Bot API"
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
            await until(lambda: any(m == "setWebhook" for m, _ in fake.calls))
            await until(lambda: _answers(port, hook))
            await fake.redeliver(update)  # Telegram tries again
            assert fake.webhook_statuses[-1] == 200
            await until(lambda: any(s.chat_id == CHAT and s.reply_markup for s in fake.sent))
            assert (await ask(settings, "lock"))["ok"]
            await until(lambda: _answers(port, hook))
            await fake.text(CHAT, "hello")
            assert fake.webhook_statuses[-1] == 503
    finally:
        await fake.stop()


def _answers(port: int, url: str) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(load_swagger() is None, reason="the signal-cli-rest-api swagger is absent")
async def test_signal_is_not_read_while_locked_and_everything_is_handled_after(
    tmp_path: Path,
) -> None:
    fake = FakeSignalApi()
    root = await fake.start()
    settings = settings_for(tmp_path, signal_api_url=root, signal_number=NUMBER)
    await make_instance(settings)
    people = [f"0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a{n:02d}" for n in range(3)]
    try:
        async with supervised(settings):
            for uuid in people:
                await fake.deliver(fake.envelope(uuid, "start"))
            await asyncio.sleep(1.5)
            assert not [c for c in fake.calls if c[1].startswith("/v1/receive")]
            assert len(fake.inbox) == 3, "signal-cli keeps them while tipline is locked"
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
            asked = lambda u: any("Choose your language." in t for t in fake.to(u))  # noqa: E731
            await until(lambda: all(asked(u) for u in people), limit=30)
    finally:
        await fake.stop()


async def test_request_lock_gives_the_outbox_a_moment_then_locks(tmp_path: Path) -> None:
    fake = FakeBotApi()
    root = await fake.start()
    settings = settings_for(tmp_path, telegram_token=TOKEN, telegram_base_url=root)
    await make_instance(settings)
    try:
        async with supervised(settings, lock_grace=1.0) as service:
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
            await until(lambda: polls(fake) > 0)
            runtime = service.runtime
            assert runtime is not None
            # nothing waiting to be sent: the lock comes at once
            began = time.monotonic()
            runtime.request_lock()
            runtime.request_lock()  # a second request while the first runs changes nothing
            await until(lambda: service.state == "locked")
            assert time.monotonic() - began < 0.9
            assert not runtime.vault.keyring.keks, "every KEK dropped"
            del runtime

            # a message due in the outbox that no sender takes: the lock waits out the grace
            assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
            runtime = service.runtime
            assert runtime is not None
            async with runtime.engine.begin() as conn:
                await conn.execute(
                    insert(OutboxItem).values(
                        id="x" * 40,
                        channel="nowhere",
                        lane="l" * 64,
                        due_at=START,
                        attempts=0,
                        expires_at=START + timedelta(days=1),
                        kek_id=1,
                        wrapped_dek=b"w",
                        payload_ct=b"p",
                    )
                )
            began = time.monotonic()
            runtime.request_lock()
            await until(lambda: service.state == "locked")
            assert 0.9 <= time.monotonic() - began < 5.0
            after = polls(fake)
            await asyncio.sleep(0.3)
            assert polls(fake) == after
    finally:
        await fake.stop()

"""Files over real HTTP: the evidence package and a case's originals over the fake
signal-cli-rest-api (attachments that validate against the swagger; the canary inside the
package and nowhere on disk), and as protected documents over the fake Bot API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.channels.telegram import TelegramTransport, application_builder
from bot.services.evidence import verify_package
from bot.services.outbox import OutgoingFile, Undeliverable
from storage.models import OutboxItem
from tests.fake_signal import load_swagger
from tests.fake_telegram import FakeBotApi
from tests.helpers import CANARY
from tests.signal_harness import SignalHarness
from tests.telegram_harness import jpeg_with_gps
from tests.test_signal import REPORT

NO_SWAGGER = pytest.mark.skipif(
    load_swagger() is None, reason="../shared/contracts/signal-cli-rest-api.swagger.json is absent"
)

REPORTER = "7a1c9e2b-0d3f-4e5a-8b6c-1d2e3f4a5b6c"
LAWYER = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
DATA_URI = re.compile(r"^data:(?P<mime>[\w/.+-]+);filename=(?P<name>[^;]+);base64,(?P<data>.+)$")


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    harness = SignalHarness(tmp_path / "instance")
    (tmp_path / "instance").mkdir()
    await harness.start_all()
    yield harness
    await harness.stop_all()


def attachments(sig: SignalHarness, uuid: str) -> list[tuple[str, str, bytes]]:
    found = []
    for message in sig.fake.sent:
        if message["to"] == uuid:
            for item in message["attachments"]:
                match = DATA_URI.match(item)
                assert match, item[:80]
                found.append((match["mime"], match["name"], base64.b64decode(match["data"])))
    return found


@NO_SWAGGER
async def test_export_and_originals_reach_a_signal_lawyer_and_nothing_reaches_the_disk(
    sig: SignalHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lawyer_id, code = await sig.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await sig.say(LAWYER, f"/register {code}")
    phrase = sig.fake.to(LAWYER)[-1].split("\n\n")[1]
    await sig.lawyers.verify(lawyer_id, phrase)
    photo = jpeg_with_gps(CANARY)
    for text in REPORT[:14]:
        await sig.say(REPORTER, text)
    await sig.say(REPORTER, None, attachments=[sig.fake.attach(photo, "image/jpeg")])
    for text in REPORT[14:]:
        await sig.say(REPORTER, text)
    assert any("New case #1" in t for t in sig.fake.to(LAWYER))

    # from here on, any temporary file Python makes lands where the test can see it
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    await sig.say(LAWYER, "/case 1")
    ((mime, name, original),) = attachments(sig, LAWYER)
    assert (mime, name, original) == ("image/jpeg", "originals-01.jpg", photo)
    assert CANARY.encode() in original, "the original bytes, metadata and all, for the lawyer"

    await sig.say(LAWYER, "/export 1")
    mime, name, package = attachments(sig, LAWYER)[-1]
    assert (mime, name) == ("application/zip", "tipline-case-1.zip")
    caption = next(m["text"] for m in sig.fake.sent if m["attachments"] and m["to"] == LAWYER)
    assert caption.startswith("Original files of case #1")
    assert sig.fake.invalid == [], "every send, attachments included, follows the swagger"
    verdict = verify_package(package, [sig.vault.keyring.public_key()])
    assert verdict.ok and verdict.case == 1, verdict
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        record = json.loads(archive.read("case.json"))
        page = archive.read("case.html").decode()
        assert archive.read("originals/01.jpg") == photo
    assert CANARY in record["narrative"] and CANARY in record["detention"]["place"]
    assert CANARY in page and "<h1>Case #1: evidence package</h1>" in page
    assert all(CANARY not in t for t in sig.fake.to(REPORTER)), "never echoed to the reporter"

    # nothing of it is on the disk outside the encrypted store, and no temporary file is left
    async with sig.db.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(OutboxItem))).scalar_one()
    assert left == 0, "the package left the outbox once Signal took it"
    needles = [CANARY.encode(), base64.b64encode(package[:48]), package[:64]]
    assert await asyncio.to_thread(_found_on_disk, tmp_path, needles) == []
    assert await asyncio.to_thread(lambda: list((tmp_path / "tmp").iterdir())) == [], "no temp file"


def _found_on_disk(root: Path, needles: list[bytes]) -> list[str]:
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and any(n in path.read_bytes() for n in needles)
    ]


async def test_files_reach_telegram_as_protected_documents() -> None:
    fake = FakeBotApi()
    root = await fake.start()
    fake._user(5151, "en")
    application = application_builder(fake.token, root).build()
    files = [
        OutgoingFile("tipline-case-1.zip", "application/zip", b"PK\x03\x04 package"),
        OutgoingFile("originals/01.pdf", "application/pdf", b"%PDF-1.4 original"),
    ]
    try:
        async with application:
            transport = TelegramTransport(application, asyncio.sleep)
            refs = await transport.send_files("5151", "Evidence " + "x" * 2000, files)
            with pytest.raises(Undeliverable):
                await transport.send_files("4040", "nobody", files[:1])
    finally:
        await fake.stop()
    assert len(refs) == 2 and len(set(refs)) == 2
    assert [(d["name"], d["data"], d["protect"]) for d in fake.documents] == [
        ("tipline-case-1.zip", b"PK\x03\x04 package", True),
        ("originals-01.pdf", b"%PDF-1.4 original", True),
    ]
    assert fake.documents[0]["caption"] == ("Evidence " + "x" * 2000)[:1024]
    assert fake.documents[1]["caption"] == ""

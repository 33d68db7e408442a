"""Issue 12, a reporter's changed Signal identity: the questionnaire still trusts on first use,
but lawyer messages to that address are held (kept unread, never sent to the new identity) until
the reporter sends ``status CODE`` from it; the lawyer is told that the device changed.
Over the fake signal-cli-rest-api, whose send answers 400 "Untrusted Identity" as the real one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_signal import load_swagger
from tests.fake_telegram import until
from tests.signal_harness import SignalHarness
from tests.test_signal import REPORT

REPORTER = "8b7a6f5e-4d3c-4b2a-9180-7f6e5d4c3b2a"
LAWYER = "9c8b7a6f-5e4d-4c3b-a291-8a7f6e5d4c3b"
FIRST = "Your hearing is on Monday at 9"
SECOND = "Bring 2 copies of the summons"
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
NEW_CASE = re.compile(r"New case #(\d+)")

if load_swagger() is None:
    pytest.skip(
        "../shared/contracts/signal-cli-rest-api.swagger.json is absent", allow_module_level=True
    )


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    harness = SignalHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


def last(texts: list[str], pattern: re.Pattern[str]) -> str:
    found = [m.group(1 if pattern.groups else 0) for t in texts if (m := pattern.search(t))]
    assert found
    return found[-1]


async def reported(sig: SignalHarness) -> tuple[str, int]:
    lawyer_id, invite = await sig.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await sig.say(LAWYER, f"register {invite}")
    await sig.lawyers.verify(lawyer_id, sig.fake.to(LAWYER)[-1].split("\n\n")[1])
    for text in [*REPORT[:-2], "1", "1", "1"]:  # reach me here, submit, written down
        await sig.say(REPORTER, text)
    number = int(last(sig.fake.to(LAWYER), NEW_CASE))
    await sig.say(LAWYER, f"accept {number}")
    return last(sig.fake.to(REPORTER), CODE), number


async def test_lawyer_replies_are_held_then_released_once_the_code_is_proved(
    sig: SignalHarness,
) -> None:
    code, number = await reported(sig)
    sig.fake.untrusted.add(REPORTER)  # someone re-registered the reporter's number
    sent = len(sig.fake.to(REPORTER))
    await sig.say(LAWYER, f"reply {number} {FIRST}")
    changed = (
        f"The reporter's Signal device on case #{number} changed. Your messages to them are "
        "held until they prove their receipt code from the new device."
    )
    await until(lambda: sig.fake.to(LAWYER)[-1] == changed)
    assert sig.fake.to(REPORTER)[sent:] == [], "not even the notice went to the new identity"
    assert REPORTER not in sig.fake.trusted, "a lawyer's message never trusts it"
    # while held, a second reply is kept and the lawyer hears so at once
    await sig.say(LAWYER, f"reply {number} {SECOND}")
    assert sig.fake.to(LAWYER)[-1] == (
        "The reporter's device changed: your message on case "
        f"#{number} is held until they prove their receipt code from the new device."
    )
    # the new device may ask to read: it is told to prove the code, and sees nothing
    await sig.say(REPORTER, "read")
    assert sig.fake.to(REPORTER)[-1] == "To see your messages here, send status and your code."
    assert not any(FIRST in t or SECOND in t for t in sig.fake.to(REPORTER))
    await sig.say(REPORTER, f"status {code}")
    released = sig.fake.to(REPORTER)[-3:]
    assert released == [
        "A lawyer is working on your report.",
        f"A lawyer wrote to you:\n{FIRST}",
        f"A lawyer wrote to you:\n{SECOND}\n\n1 = Done, delete it",
    ]
    # proved: the next reply reaches the chat as a notice again
    await sig.say(LAWYER, f"reply {number} See you there")
    assert sig.fake.to(LAWYER)[-1] == (
        f"Your message on case #{number} was delivered to the reporter."
    )
    assert sig.fake.to(REPORTER)[-1].startswith("You have a new message.")
    assert sig.fake.invalid == []


async def test_the_questionnaire_still_trusts_on_first_use(sig: SignalHarness) -> None:
    uuid = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
    for text in REPORT[:4]:
        await sig.say(uuid, text)
    sig.fake.untrusted.add(uuid)
    await sig.say(uuid, REPORT[4])
    assert uuid in sig.fake.trusted
    assert sig.fake.to(uuid)[-1].startswith("Where is the person held")
    # trusted for the questionnaire, yet lawyer messages to it stay held until the code
    async with sig.uow() as uow:
        box = await sig.world.inbound.reporter.notes.mailbox(uow, "signal", uuid, sig.clock())
    assert box.changed

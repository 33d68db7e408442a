"""The reporter's side after a report (DESIGN.md sections 2 and 4): the receipt that goes once it
is written down, lawyer messages read once, the status by code as a read-once screen, withdrawal
with a confirmation, and a Signal identity that changed.

Every method runs inside the caller's transaction (the inbound one), writes what it shows to the
outbox, and gives every message a deadline on the reporter's screen.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.domain.messages import (
    DONE_READING,
    READ,
    WITHDRAW_NO,
    WITHDRAW_YES,
    WRITTEN,
    Act,
    Notice,
    OptionView,
    Outbound,
)
from bot.domain.texts import Texts
from bot.services.erasure import Erasure
from bot.services.notes import ChatNotes, Prompt
from bot.services.outbox import Outgoing
from bot.services.ports import LawyerStatus, StaffUnitOfWork

log = logging.getLogger(__name__)

#: Screen tags: what a later action deletes.
RECEIPT = "receipt"
READING = "read"
MAIL = "mail"
CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class ScreenPolicy:
    """How long each kind of message stays on a reporter's screen, and on the server."""

    #: The receipt, unless "I have written it down" deletes it first.
    receipt: timedelta = timedelta(minutes=15)
    #: A read-once screen (a lawyer's message, a status answer), unless Done deletes it first;
    #: also every other notice to a reporter.
    read: timedelta = timedelta(minutes=10)
    #: A lawyer's message on the server after it was first shown.
    read_ttl: timedelta = timedelta(hours=24)
    #: A question (an abandoned one goes with its draft).
    question: timedelta = timedelta(hours=24)
    #: A withdrawal waiting for its confirmation.
    confirm: timedelta = timedelta(minutes=10)
    #: A chat's mailbox after the last lawyer message (the case's retention).
    mailbox: timedelta = timedelta(days=30)


def _hour_after(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Where:
    """The chat a reporter writes from, and how it shows options."""

    channel: str
    chat: str
    language: str
    #: Numbered options (Signal, console): the chat's next message answers a prompt.
    numbered: bool

    @property
    def address(self) -> str:
        """The chat as stored for reply addresses (``signal:uuid``)."""
        return f"{self.channel}:{self.chat}"


class ReporterService:
    """Receipts, read-once lawyer messages, status, withdrawal, identity changes."""

    def __init__(
        self,
        texts: Texts,
        policy: ScreenPolicy | None = None,
        erasure: Erasure | None = None,
        nonce: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._texts = texts
        self.policy = policy or ScreenPolicy()
        self.erasure = erasure or Erasure()
        self.notes = ChatNotes(self.policy.mailbox)
        self._nonce = nonce

    def _t(self, language: str, key: str, **params: object) -> str:
        return self._texts.get(language, key, **params)

    def show(
        self,
        out: Outgoing,
        at: Where,
        messages: Sequence[Outbound],
        *,
        tag: str = "",
        keep: timedelta | None = None,
        clear: bool = False,
        delete: Sequence[str] = (),
    ) -> None:
        """Show reporter messages with a deadline (a read-once one unless told otherwise)."""
        out.show(
            at.channel,
            at.chat,
            messages,
            clear=clear,
            track=True,
            delete=delete,
            keep=self.policy.read if keep is None else keep,
            tag=tag,
        )

    # ---- the receipt ---------------------------------------------------------------------

    async def show_receipt(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        at: Where,
        replies: Sequence[Outbound],
        now: datetime,
        delete: Sequence[str] = (),
    ) -> None:
        """The one message left after a submission, deleted once written down or on time."""
        keep = self.policy.receipt
        self.show(out, at, replies, tag=RECEIPT, keep=keep, clear=True, delete=delete)
        if at.numbered:
            await self.notes.set_prompt(uow, at.channel, at.chat, Prompt((WRITTEN,), now + keep))

    # ---- actions -------------------------------------------------------------------------

    async def answer_prompt(
        self, uow: StaffUnitOfWork, out: Outgoing, at: Where, text: str, now: datetime
    ) -> bool:
        """On a numbered channel, a reply to the chat's prompt; False when it is not one (the
        prompt is gone either way: it answers only the very next message)."""
        prompt = await self.notes.prompt(uow, at.channel, at.chat, now)
        if prompt is None:
            return False
        await self.notes.drop_prompt(uow, at.channel, at.chat)
        typed = text.strip()
        if not (typed.isascii() and typed.isdigit() and 1 <= int(typed) <= len(prompt.actions)):
            return False
        act = Act(prompt.actions[int(typed) - 1], prompt.nonce)
        await self.act(uow, out, at, act, now, prompt=prompt)
        return True

    async def act(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        at: Where,
        act: Act,
        now: datetime,
        *,
        prompt: Prompt | None = None,
    ) -> None:
        """A button pressed (or its number typed); a stale or foreign one changes nothing."""
        if act.action == WRITTEN:
            out.dismiss(at.channel, at.chat, [RECEIPT])
        elif act.action == DONE_READING:
            out.dismiss(at.channel, at.chat, [READING])
        elif act.action == READ:
            await self.read(uow, out, at, now)
        if act.action not in (WITHDRAW_YES, WITHDRAW_NO):
            return
        # A withdrawal's confirmation: valid only for this chat's newest question, once.
        if prompt is None:
            prompt = await self.notes.prompt(uow, at.channel, at.chat, now)
        valid = (
            prompt is not None
            and prompt.case_id is not None
            and WITHDRAW_YES in prompt.actions
            and hmac.compare_digest(prompt.nonce.encode(), act.nonce.encode())
        )
        out.dismiss(at.channel, at.chat, [CONFIRM])
        if act.action == WITHDRAW_NO:
            if valid:
                await self.notes.drop_prompt(uow, at.channel, at.chat)
            self.show(out, at, [Notice(self._t(at.language, "ui.withdraw_kept"))])
            return
        if not valid or prompt is None or prompt.case_id is None:
            self.show(out, at, [Notice(self._t(at.language, "ui.withdraw_expired"))])
            return
        await self.notes.drop_prompt(uow, at.channel, at.chat)
        withdrawn = await self.withdraw_case(uow, out, prompt.case_id, now)
        key = "ui.withdrawn" if withdrawn else "status.unknown"
        self.show(out, at, [Notice(self._t(at.language, key))])

    # ---- lawyer messages, read once ------------------------------------------------------

    async def lawyer_wrote(
        self, uow: StaffUnitOfWork, out: Outgoing, case_id: str, address: str, now: datetime
    ) -> bool:
        """A lawyer's message to a "reach me here" chat is stored: the chat gets a notice
        without content. False when it is held (the chat's Signal identity changed)."""
        channel, _, chat = address.partition(":")
        box = await self.notes.mailbox(uow, channel, chat, now)
        if case_id not in box.cases:
            box = replace(box, cases=(*box.cases, case_id))
        await self.notes.set_mailbox(uow, channel, chat, box, now)
        if box.changed:
            return False
        content = await uow.cases.get(case_id)
        language = str(content.meta.get("language", "en")) if content else "en"
        if channel == "telegram":
            button = OptionView(READ, self._t(language, "ui.read_button"))
            notice = Notice(self._t(language, "ui.new_message"), (button,), private=True)
        else:
            notice = Notice(self._t(language, "ui.new_message_send_read"), private=True)
        # No content and no deadline of its own but Telegram's: it waits to be read.
        out.show(channel, chat, [notice], clear=False, track=True, tag=MAIL)
        return True

    async def read(self, uow: StaffUnitOfWork, out: Outgoing, at: Where, now: datetime) -> None:
        """The chat's unread lawyer messages, shown once, deleted on Done or on time."""
        box = await self.notes.mailbox(uow, at.channel, at.chat, now)
        out.dismiss(at.channel, at.chat, [MAIL])
        if box.changed:
            self.show(out, at, [Notice(self._t(at.language, "ui.read_device_changed"))])
            return
        texts = await self._take_unread(uow, box.cases, at.language, now)
        live = [c for c in box.cases if await uow.assignments.by_id(c) is not None]
        if live != list(box.cases):
            await self.notes.set_mailbox(
                uow, at.channel, at.chat, replace(box, cases=tuple(live)), now
            )
        if not texts:
            self.show(out, at, [Notice(self._t(at.language, "ui.no_new_messages"))])
            return
        await self._read_screen(uow, out, at, texts, now, private=True)

    async def status(
        self, uow: StaffUnitOfWork, out: Outgoing, at: Where, code: str | None, now: datetime
    ) -> None:
        """The status by receipt code and any unread messages, as a read-once screen; unknown
        and malformed codes look alike. From a chat whose Signal identity changed, the code
        of one of its cases is the proof that releases what was held."""
        case_id = status = None
        if code is not None:
            case_id = await uow.cases.id_by_receipt(code)
            status = await uow.cases.status_by_receipt(code) if case_id is not None else None
        key = f"status.{status}" if status else "status.unknown"
        texts = [self._t(at.language, key)]
        if case_id is not None:
            box = await self.notes.mailbox(uow, at.channel, at.chat, now)
            if box.changed and case_id in box.cases:
                await self.notes.set_mailbox(
                    uow, at.channel, at.chat, replace(box, changed=False), now
                )
            texts += await self._take_unread(uow, [case_id], at.language, now)
        await self._read_screen(uow, out, at, texts, now, private=False)

    async def _take_unread(
        self, uow: StaffUnitOfWork, case_ids: Sequence[str], language: str, now: datetime
    ) -> list[str]:
        ids: list[str] = []
        texts: list[str] = []
        for case_id in case_ids:
            for message_id, text in await uow.assignments.unread(case_id):
                ids.append(message_id)
                texts.append(self._t(language, "ui.lawyer_message", text=text))
        await uow.assignments.mark_shown(ids, _hour_after(now + self.policy.read_ttl))
        return texts

    async def _read_screen(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        at: Where,
        texts: Sequence[str],
        now: datetime,
        *,
        private: bool,
    ) -> None:
        done = OptionView(DONE_READING, self._t(at.language, "ui.done_reading"))
        notices = [Notice(text, private=private) for text in texts]
        notices[-1] = replace(notices[-1], actions=(done,))
        self.show(out, at, notices, tag=READING)
        if at.numbered:
            until = now + self.policy.read
            await self.notes.set_prompt(uow, at.channel, at.chat, Prompt((DONE_READING,), until))

    # ---- withdrawal ----------------------------------------------------------------------

    async def withdraw(
        self, uow: StaffUnitOfWork, out: Outgoing, at: Where, code: str | None, now: datetime
    ) -> None:
        """Ask to confirm the withdrawal of the case with this code; a wrong, unknown or
        malformed code gets the answer an unknown code gets from ``status``."""
        case_id = await uow.cases.id_by_receipt(code) if code is not None else None
        if case_id is None:
            self.show(out, at, [Notice(self._t(at.language, "status.unknown"))])
            return
        nonce = self._nonce()
        until = now + self.policy.confirm
        prompt = Prompt((WITHDRAW_YES, WITHDRAW_NO), until, case_id, nonce)
        await self.notes.set_prompt(uow, at.channel, at.chat, prompt)
        actions = (
            OptionView(f"{WITHDRAW_YES}:{nonce}", self._t(at.language, "ui.withdraw_yes")),
            OptionView(WITHDRAW_NO, self._t(at.language, "ui.withdraw_no")),
        )
        notice = Notice(self._t(at.language, "ui.withdraw_confirm"), actions)
        out.dismiss(at.channel, at.chat, [CONFIRM])
        self.show(out, at, [notice], tag=CONFIRM, keep=self.policy.confirm)

    async def withdraw_case(
        self, uow: StaffUnitOfWork, out: Outgoing, case_id: str, now: datetime
    ) -> bool:
        """Delete a case, its files, thread and reply address; tell its lawyer; audit without
        content; ask for the ratchet that makes it final. False when it is already gone."""
        case = await uow.assignments.by_id(case_id)
        content = await uow.cases.get(case_id)
        if case is None or content is None:
            return False
        documents = content.answers.get("documents")
        if isinstance(documents, list):
            await uow.attachments.delete(str(d) for d in documents)
        if case.assigned_lawyer_id is not None:
            lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
            contact = await uow.lawyers.contact(case.assigned_lawyer_id)
            if lawyer is not None and contact and lawyer.status == LawyerStatus.VERIFIED:
                text = self._t(lawyer.languages[0], "staff.withdrawn", number=case.number)
                out.notify(contact, text)
        # Audited first: the entry names the case by the token kept inside the case.
        await uow.audit.append("reporter", "case.withdraw", case_id, now)
        await uow.cases.delete(case_id)
        if content.reply_address:
            channel, _, chat = content.reply_address.partition(":")
            box = await self.notes.mailbox(uow, channel, chat, now)
            left = tuple(c for c in box.cases if c != case_id)
            await self.notes.set_mailbox(uow, channel, chat, replace(box, cases=left), now)
            if not left:  # "you have a new message" about a case that is gone
                out.dismiss(channel, chat, [MAIL])
        await self.erasure.schedule(uow, now)
        log.info("case withdrawn by the reporter")
        return True

    # ---- a changed Signal identity -------------------------------------------------------

    async def identity_changed(
        self, uow: StaffUnitOfWork, out: Outgoing, address: str, now: datetime
    ) -> None:
        """A reporter's Signal safety number changed: hold lawyer messages to the chat until
        their receipt code is proved from it, and tell the lawyers of its cases."""
        channel, _, chat = address.partition(":")
        box = await self.notes.mailbox(uow, channel, chat, now)
        if box.changed:
            return
        await self.notes.set_mailbox(uow, channel, chat, replace(box, changed=True), now)
        for case_id in box.cases:
            case = await uow.assignments.by_id(case_id)
            if case is None or case.assigned_lawyer_id is None:
                continue
            lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
            contact = await uow.lawyers.contact(case.assigned_lawyer_id)
            if lawyer is not None and contact and lawyer.status == LawyerStatus.VERIFIED:
                text = self._t(
                    lawyer.languages[0], "staff.reporter_device_changed", number=case.number
                )
                out.notify(contact, text)
        log.warning("a reporter's Signal safety number changed; lawyer messages are held")

    async def forget(self, uow: StaffUnitOfWork, channel: str, chat: str) -> None:
        """The chat's prompt and mailbox go with /forget."""
        await self.notes.forget(uow, channel, chat)

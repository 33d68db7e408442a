"""Small encrypted records a chat keeps beside its draft, through the same store under their own
pseudonym labels (so they are found, re-keyed and purged like drafts):

- the prompt its next message answers on a numbered channel ("1 = I have written it down"), or a
  withdrawal waiting for its confirmation (the case is named only in here, never in a button);
- its mailbox: the cases whose lawyers write to this chat, and whether the chat's Signal
  identity changed (lawyer messages are held until the receipt code is proved from it).

Each keeps its precise end inside the ciphertext; the plaintext expiry is rounded up to the hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.services.ports import DraftStore

PROMPT = "prompt"
MAILBOX = "mailbox"


class HasDrafts(Protocol):
    """A transaction that reaches the draft store."""

    @property
    def drafts(self) -> DraftStore:
        """Drafts in this transaction."""
        ...


def _hour_after(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the numbers of a chat's next message stand for, until when."""

    actions: tuple[str, ...]
    until: datetime
    #: The case a withdrawal waits to confirm, and the nonce its buttons carry.
    case_id: str | None = None
    nonce: str = ""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Cases whose lawyers write to this chat; a changed Signal identity holds their messages."""

    cases: tuple[str, ...] = ()
    changed: bool = False


class ChatNotes:
    """Reads and writes a chat's prompt and mailbox inside the caller's transaction."""

    def __init__(self, mailbox_ttl: timedelta = timedelta(days=30)) -> None:
        self._mailbox_ttl = mailbox_ttl

    @staticmethod
    async def _load(
        uow: HasDrafts, kind: str, channel: str, chat: str, now: datetime
    ) -> dict[str, Any] | None:
        data = await uow.drafts.load(f"{kind}:{channel}", chat, now)
        if data is None:
            return None
        until = data.get("until")
        if not isinstance(until, int | float) or until <= now.timestamp():
            return None
        return data

    @staticmethod
    async def _save(
        uow: HasDrafts, kind: str, channel: str, chat: str, data: dict[str, Any], until: datetime
    ) -> None:
        body = dict(data, until=until.timestamp())
        await uow.drafts.save(f"{kind}:{channel}", chat, body, _hour_after(until))

    async def prompt(self, uow: HasDrafts, channel: str, chat: str, now: datetime) -> Prompt | None:
        """The chat's prompt, if one is waiting."""
        data = await self._load(uow, PROMPT, channel, chat, now)
        if data is None:
            return None
        try:
            return Prompt(
                tuple(str(a) for a in data["actions"]),
                datetime.fromtimestamp(float(data["until"]), UTC),
                None if data.get("case") is None else str(data["case"]),
                str(data.get("nonce", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None

    async def set_prompt(self, uow: HasDrafts, channel: str, chat: str, prompt: Prompt) -> None:
        """Make ``prompt`` the one the chat's next message answers."""
        data = {"actions": list(prompt.actions), "case": prompt.case_id, "nonce": prompt.nonce}
        await self._save(uow, PROMPT, channel, chat, data, prompt.until)

    async def drop_prompt(self, uow: HasDrafts, channel: str, chat: str) -> None:
        """Forget the chat's prompt."""
        await uow.drafts.delete(f"{PROMPT}:{channel}", chat)

    async def mailbox(self, uow: HasDrafts, channel: str, chat: str, now: datetime) -> Mailbox:
        """The chat's mailbox (empty when it has none)."""
        data = await self._load(uow, MAILBOX, channel, chat, now)
        if data is None:
            return Mailbox()
        cases = data.get("cases")
        return Mailbox(
            tuple(str(c) for c in cases) if isinstance(cases, list) else (),
            bool(data.get("changed", False)),
        )

    async def set_mailbox(
        self, uow: HasDrafts, channel: str, chat: str, mailbox: Mailbox, now: datetime
    ) -> None:
        """Keep the chat's mailbox (for the retention time from now)."""
        data = {"cases": list(mailbox.cases), "changed": mailbox.changed}
        await self._save(uow, MAILBOX, channel, chat, data, now + self._mailbox_ttl)

    async def forget(self, uow: HasDrafts, channel: str, chat: str) -> None:
        """Delete the chat's prompt and mailbox."""
        for kind in (PROMPT, MAILBOX):
            await uow.drafts.delete(f"{kind}:{channel}", chat)

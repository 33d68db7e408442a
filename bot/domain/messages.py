"""Inbound events and outbound messages of the reporter conversation, shared by every channel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.questionnaire import Answer

# ---- inbound events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The reporter opens (or reopens) the conversation; the hint is the messenger's language."""

    language_hint: str | None = None


@dataclass(frozen=True, slots=True)
class Choose:
    """A single option was picked."""

    option: str


@dataclass(frozen=True, slots=True)
class ChooseMany:
    """Several options were picked at once (numbered channels)."""

    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Toggle:
    """One option of a multi-select step was switched on or off (button channels)."""

    option: str


@dataclass(frozen=True, slots=True)
class Done:
    """The reporter finished a multi-select or attachment step."""


@dataclass(frozen=True, slots=True)
class Skip:
    """The reporter skipped an optional step."""


@dataclass(frozen=True, slots=True)
class TextAnswer:
    """Free text typed by the reporter."""

    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A typed reply on a numbered channel (console, Signal), read against the current step."""

    text: str


@dataclass(frozen=True, slots=True)
class AttachmentAdded:
    """A file was accepted and stored; only its opaque reference reaches the domain."""

    ref: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """Input that could not be understood (a number out of range, a stray button)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A file that is not accepted (wrong type, too large, unreadable)."""


@dataclass(frozen=True, slots=True)
class ChangeLanguage:
    """The reporter asked to switch language."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop and delete the draft."""


#: Actions under a notice (not a question): a button on Telegram, a numbered option elsewhere.
WRITTEN = "w"  # the receipt code is written down: delete the receipt
READ = "r"  # show the lawyer's new messages
DONE_READING = "k"  # delete what was read
WITHDRAW_YES = "y"  # withdraw the report (the confirmation)
WITHDRAW_NO = "n"  # keep it
ACTIONS = frozenset({WRITTEN, READ, DONE_READING, WITHDRAW_YES, WITHDRAW_NO})


@dataclass(frozen=True, slots=True)
class Act:
    """An action under a notice was chosen; ``nonce`` ties a confirmation to its question."""

    action: str
    nonce: str = ""


Event = (
    Start
    | Choose
    | ChooseMany
    | Toggle
    | Done
    | Skip
    | TextAnswer
    | Reply
    | AttachmentAdded
    | Invalid
    | Refused
    | ChangeLanguage
    | Stop
    | Act
)

# ---- outbound ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionView:
    """An option as shown to the reporter."""

    id: str
    label: str
    selected: bool = False


@dataclass(frozen=True, slots=True)
class Question:
    """A question to show; channels render it as buttons or a numbered list."""

    step: str
    text: str
    options: tuple[OptionView, ...]
    multi: bool
    free_text: bool
    can_skip: bool
    labels: Mapping[str, str]
    language: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A short message that is not a question, with actions under it (``OptionView`` ids are
    :data:`ACTIONS`, a confirmation's followed by ``:nonce``)."""

    text: str
    actions: tuple[OptionView, ...] = ()
    #: About a case (a lawyer's message): never sent to a reporter whose Signal identity changed.
    private: bool = False


@dataclass(frozen=True, slots=True)
class SubmitReport:
    """The reporter confirmed: the service stores the case and answers with a receipt."""

    language: str
    channel: str
    answers: Mapping[str, Answer]
    submitted_at: datetime


@dataclass(frozen=True, slots=True)
class DraftDeleted:
    """The reporter stopped: the draft must be deleted."""


Outbound = Question | Notice | SubmitReport | DraftDeleted


def notices_then_question(replies: list[Outbound]) -> tuple[list[Notice], Question] | None:
    """Replies that are notices followed by one question, split; None when they are not."""
    if not replies or not isinstance(question := replies[-1], Question):
        return None
    notices = [n for n in replies[:-1] if isinstance(n, Notice)]
    return (notices, question) if len(notices) == len(replies) - 1 else None


def outbound_to_dict(message: Question | Notice) -> dict[str, Any]:
    """A JSON-ready form of a message to show (kept encrypted in the outbox)."""
    if isinstance(message, Notice):
        data: dict[str, Any] = {"k": "n", "text": message.text}
        if message.actions:
            data["actions"] = [[a.id, a.label] for a in message.actions]
        if message.private:
            data["private"] = True
        return data
    return {
        "k": "q",
        "step": message.step,
        "text": message.text,
        "options": [[o.id, o.label, o.selected] for o in message.options],
        "multi": message.multi,
        "free_text": message.free_text,
        "can_skip": message.can_skip,
        "labels": dict(message.labels),
        "language": message.language,
    }


def outbound_from_dict(data: Mapping[str, Any]) -> Question | Notice:
    """Inverse of :func:`outbound_to_dict`; raises ValueError on anything else."""
    try:
        if data["k"] == "n":
            actions = tuple(OptionView(str(i), str(label)) for i, label in data.get("actions", ()))
            return Notice(str(data["text"]), actions, bool(data.get("private", False)))
        if data["k"] != "q":
            raise ValueError("unknown message kind")
        return Question(
            step=str(data["step"]),
            text=str(data["text"]),
            options=tuple(
                OptionView(str(i), str(label), bool(s)) for i, label, s in data["options"]
            ),
            multi=bool(data["multi"]),
            free_text=bool(data["free_text"]),
            can_skip=bool(data["can_skip"]),
            labels={str(k): str(v) for k, v in dict(data["labels"]).items()},
            language=str(data["language"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("unreadable message") from exc


def action_of(option_id: str) -> Act | None:
    """The action an option id stands for (``y:nonce`` is a confirmation); None for others."""
    action, _, nonce = option_id.partition(":")
    return Act(action, nonce) if action in ACTIONS and len(nonce) <= 64 else None

"""The questionnaire engine: ``(state, event, now) -> (state, outbound)``, pure."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.domain.casetext import answer_text
from bot.domain.messages import (
    WRITTEN,
    AttachmentAdded,
    ChangeLanguage,
    Choose,
    ChooseMany,
    Done,
    DraftDeleted,
    Event,
    Invalid,
    Notice,
    OptionView,
    Outbound,
    Question,
    Refused,
    Reply,
    Skip,
    Start,
    Stop,
    SubmitReport,
    TextAnswer,
    Toggle,
)
from bot.domain.questionnaire import Answer, Questionnaire, Step, StepKind
from bot.domain.texts import FALLBACK_LANGUAGE, Texts

STATE_VERSION = 1
MAX_ATTACHMENTS = 10
EDIT_STEP = "review.change"
#: The question asked after a gap: "You have an unfinished report: continue / delete".
RESUME_STEP = "resume"
CONTINUE = "continue"
DELETE = "delete"
#: Silence after which the conversation starts a new sitting: nothing earlier is shown again.
RESUME_AFTER = timedelta(minutes=30)
#: Steps a reporter cannot pick from the review to change (consent is not an answer about events).
_NOT_EDITABLE = frozenset({"consent", "review"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_NUMBER_LIST = re.compile(r"^\s*\d+(\s*[,; ]\s*\d+)*\s*$")


class CorruptState(ValueError):
    """A stored draft state could not be understood."""


@dataclass(frozen=True, slots=True)
class DraftState:
    """Where a conversation stands; stored only encrypted."""

    channel: str
    language: str
    answers: Mapping[str, Answer] = field(default_factory=dict)
    pending: tuple[str, ...] = ()
    editing: bool = False
    #: Opaque references of messages a channel should delete later (its questions on screen).
    refs: tuple[str, ...] = ()
    #: The last activity (seconds since the epoch; kept only inside the encrypted draft).
    active: float = 0.0
    #: Asking "continue / delete" after a gap.
    resuming: bool = False
    #: After a gap, the steps answered since: the only answers the review may show (None: no
    #: gap yet, all of them).
    sitting: tuple[str, ...] | None = None
    #: The messenger's sequence number of the last update applied to it: an older one, handled
    #: late by another process, is not applied out of order.
    order: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the state."""
        return {
            "v": STATE_VERSION,
            "channel": self.channel,
            "language": self.language,
            "answers": {k: list(v) if isinstance(v, tuple) else v for k, v in self.answers.items()},
            "pending": list(self.pending),
            "editing": self.editing,
            "refs": list(self.refs),
            "active": self.active,
            "resuming": self.resuming,
            "sitting": None if self.sitting is None else list(self.sitting),
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DraftState:
        """Rebuild a state from :meth:`to_dict` output; raises CorruptState on anything else."""
        try:
            if data["v"] != STATE_VERSION:
                raise CorruptState("unknown state version")
            answers: dict[str, Answer] = {}
            for key, value in dict(data["answers"]).items():
                if isinstance(value, list):
                    answers[str(key)] = tuple(str(v) for v in value)
                elif value is None or isinstance(value, str):
                    answers[str(key)] = value
                else:
                    raise CorruptState("bad answer")
            sitting = data.get("sitting")
            return cls(
                channel=str(data["channel"]),
                language=str(data["language"]),
                answers=answers,
                pending=tuple(str(p) for p in data["pending"]),
                editing=bool(data["editing"]),
                refs=tuple(str(r) for r in data.get("refs", ())),
                active=float(data.get("active", 0.0)),
                resuming=bool(data.get("resuming", False)),
                sitting=None if sitting is None else tuple(str(s) for s in sitting),
                order=int(data.get("order", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptState("unreadable draft state") from exc


def clean_text(text: str) -> str:
    """Normalise typed text: NFC, no control or direction-override characters, trimmed."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", text)).strip()


@dataclass(frozen=True, slots=True)
class Engine:
    """Steps a reporter through a questionnaire; holds no state of its own."""

    questionnaire: Questionnaire
    texts: Texts

    # ---- public API --------------------------------------------------------------------------

    def step(
        self, state: DraftState | None, event: Event, now: datetime, *, channel: str = "console"
    ) -> tuple[DraftState | None, list[Outbound]]:
        """Handle one event; a ``None`` state means no draft is left (stopped or submitted).

        After more than :data:`RESUME_AFTER` of silence, whatever arrives is answered with
        "continue / delete" first, and no earlier answer is shown again.
        """
        new, out = self._step(state, event, now, channel)
        if new is not None:
            new = replace(new, active=now.timestamp())
        return new, out

    def _step(
        self, state: DraftState | None, event: Event, now: datetime, channel: str
    ) -> tuple[DraftState | None, list[Outbound]]:
        if state is not None and not isinstance(event, Stop):
            gap = now.timestamp() - state.active
            silent = state.active > 0 and gap > RESUME_AFTER.total_seconds()
            if silent and not state.resuming:
                state = self._new_sitting(state)
                return state, [self.question(state)]
            if state.resuming:
                return self._resume(state, event, now, channel)
        if isinstance(event, Stop):
            lang = state.language if state else self._language(None)
            return None, [DraftDeleted(), Notice(self._t(lang, "ui.deleted"))]
        if state is None:
            hint = event.language_hint if isinstance(event, Start) else None
            state = self.new_state(channel, hint)
            return state, [Notice(self._t(state.language, "ui.welcome")), self.question(state)]
        if isinstance(event, Start):
            return state, [Notice(self._t(state.language, "ui.resume")), self.question(state)]
        if isinstance(event, ChangeLanguage):
            answers = {k: v for k, v in state.answers.items() if k != "language"}
            state = replace(state, answers=answers, pending=(), editing=False)
            return state, [self.question(state)]
        if isinstance(event, Reply):
            event = self._interpret(state, event.text)
            if isinstance(event, Stop):
                return self.step(state, event, now, channel=channel)
        if state.editing:
            return self._pick_edit(state, event)
        current = self.questionnaire.next_step(state.answers)
        return self._answer(state, current, event, now)

    def new_state(self, channel: str, language_hint: str | None) -> DraftState:
        """A fresh conversation; a supported messenger language skips the language question."""
        answers: dict[str, Answer] = {}
        language = self._language(language_hint)
        if language_hint and language == language_hint.split("-")[0].lower():
            answers["language"] = language
        return DraftState(channel=channel, language=language, answers=answers)

    def question(self, state: DraftState) -> Question:
        """The question the reporter is currently asked."""
        if state.resuming:
            return self._resume_question(state)
        if state.editing:
            return self._edit_question(state)
        step = self.questionnaire.next_step(state.answers)
        lang = state.language
        text = self._t(lang, step.prompt_key)
        channel_note = self.texts.find(lang, f"notice.channel.{state.channel}")
        if step.id == "consent" and channel_note:
            text = text + "\n\n" + channel_note
        if step.kind is StepKind.REVIEW:
            text = text + "\n\n" + self._summary(state)
        options = tuple(
            OptionView(o, self._t(lang, step.option_key(o)), o in state.pending)
            for o in step.options
        )
        return Question(
            step=step.id,
            text=text,
            options=options,
            multi=step.kind is StepKind.MULTI,
            free_text=step.kind is StepKind.TEXT,
            can_skip=step.optional,
            labels=self._labels(lang, step),
            language=lang,
        )

    def receipt(self, language: str, code: str, *, reach_here: bool) -> list[Outbound]:
        """The one message left after a submission: the receipt code, what happens next, and
        "I have written it down", which deletes it."""
        follow = "ui.receipt_reach_here" if reach_here else "ui.receipt_check_back"
        text = self._t(language, "ui.receipt", code=code) + "\n\n" + self._t(language, follow)
        written = OptionView(WRITTEN, self._t(language, "ui.written_down"))
        return [Notice(text, (written,))]

    def status(self, language: str, status: str | None) -> Notice:
        """The answer to a status request; unknown codes and malformed ones look alike."""
        key = f"status.{status}" if status else "status.unknown"
        return Notice(self._t(language, key))

    def notice(self, language: str, key: str, **params: object) -> Notice:
        """A translated notice for the adapters (rate limits, errors, refusals)."""
        return Notice(self._t(language, key, **params))

    # ---- internals ---------------------------------------------------------------------------

    def _t(self, language: str, key: str, **params: object) -> str:
        return self.texts.get(language, key, **params)

    def _language(self, hint: str | None) -> str:
        if hint:
            base = hint.split("-")[0].lower()
            if base in self.questionnaire.languages:
                return base
        return FALLBACK_LANGUAGE

    def _labels(self, lang: str, step: Step) -> dict[str, str]:
        keys = ["stop", "skip", "done", "hint_choice", "hint_multi", "hint_text", "hint_files"]
        return {k: self._t(lang, f"ui.{k}") for k in keys} | {"kind": step.kind.value}

    def _invalid(
        self, state: DraftState, key: str = "ui.invalid", **params: object
    ) -> list[Outbound]:
        return [Notice(self._t(state.language, key, **params)), self.question(state)]

    def _interpret(self, state: DraftState, raw: str) -> Event:
        """Read a typed reply on a numbered channel (console, Signal) as a domain event."""
        text = raw.strip()
        if text == "0":
            return Stop()
        if state.editing:
            kind = StepKind.CHOICE
            options: tuple[str, ...] = tuple(self._editable(state))
            optional = False
        else:
            step = self.questionnaire.next_step(state.answers)
            kind, options, optional = step.kind, step.options, step.optional
        if kind is StepKind.TEXT:
            if optional and text == "1":
                return Skip()
            return TextAnswer(raw)
        if kind is StepKind.ATTACHMENTS:
            return Done() if text == "1" else Invalid()
        if kind is StepKind.MULTI:
            if not _NUMBER_LIST.match(text):
                return Invalid()
            numbers = [int(n) for n in re.split(r"[,; ]+", text.strip()) if n]
            if any(n < 1 or n > len(options) for n in numbers):
                return Invalid()
            return ChooseMany(tuple(options[n - 1] for n in numbers))
        if text.isdigit() and text.isascii() and 1 <= int(text) <= len(options):
            return Choose(options[int(text) - 1])
        return Invalid()

    def _answer(
        self, state: DraftState, step: Step, event: Event, now: datetime
    ) -> tuple[DraftState | None, list[Outbound]]:
        if isinstance(event, Skip):
            if not step.optional:
                return state, self._invalid(state)
            return self._advance(state, step, None)
        if step.kind is StepKind.REVIEW:
            return self._review(state, event, now)
        if step.kind is StepKind.CHOICE:
            if isinstance(event, Choose) and event.option in step.options:
                if step.id == "language":
                    state = replace(state, language=event.option)
                return self._advance(state, step, event.option)
            return state, self._invalid(state)
        if step.kind is StepKind.MULTI:
            return self._multi(state, step, event)
        if step.kind is StepKind.TEXT:
            if not isinstance(event, TextAnswer):
                return state, self._invalid(state, "ui.expect_text")
            text = clean_text(event.text)
            if not text:
                return state, self._invalid(state, "ui.empty_text")
            if len(text) > step.max_length:
                return state, self._invalid(state, "ui.too_long", max=step.max_length)
            return self._advance(state, step, text)
        return self._attachments(state, step, event)

    def _multi(
        self, state: DraftState, step: Step, event: Event
    ) -> tuple[DraftState, list[Outbound]]:
        if isinstance(event, ChooseMany) and event.options:
            if not set(event.options) <= set(step.options):
                return state, self._invalid(state)
            chosen = tuple(o for o in step.options if o in event.options)
            return self._advance(state, step, chosen)
        if isinstance(event, Toggle) and event.option in step.options:
            pending = set(state.pending) ^ {event.option}
            state = replace(state, pending=tuple(o for o in step.options if o in pending))
            return state, [self.question(state)]
        if isinstance(event, Done):
            if not state.pending:
                return state, self._invalid(state, "ui.choose_one")
            return self._advance(state, step, state.pending)
        return state, self._invalid(state)

    def _attachments(
        self, state: DraftState, step: Step, event: Event
    ) -> tuple[DraftState, list[Outbound]]:
        if isinstance(event, AttachmentAdded):
            if len(state.pending) >= MAX_ATTACHMENTS:
                return state, self._invalid(state, "ui.too_many_files", max=MAX_ATTACHMENTS)
            state = replace(state, pending=(*state.pending, event.ref))
            notice = Notice(self._t(state.language, "ui.file_received", count=len(state.pending)))
            return state, [notice, self.question(state)]
        if isinstance(event, Done):
            return self._advance(state, step, state.pending or None)
        if isinstance(event, Refused):
            return state, self._invalid(state, "ui.file_refused")
        return state, self._invalid(state, "ui.expect_file")

    def _review(
        self, state: DraftState, event: Event, now: datetime
    ) -> tuple[DraftState | None, list[Outbound]]:
        if isinstance(event, Choose) and event.option == "submit":
            answers = self.questionnaire.applicable_answers(state.answers)
            report = SubmitReport(state.language, state.channel, answers, now)
            return None, [report]
        if isinstance(event, Choose) and event.option == "change":
            state = replace(state, editing=True)
            return state, [self.question(state)]
        return state, self._invalid(state)

    def _new_sitting(self, state: DraftState) -> DraftState:
        # Toggled options of a half-answered multi-select are earlier answers too; files sent
        # at the documents step stay (the question shows no file).
        step = self.questionnaire.next_step(state.answers)
        pending = state.pending if step.kind is StepKind.ATTACHMENTS else ()
        return replace(state, resuming=True, editing=False, pending=pending, sitting=())

    def _resume_question(self, state: DraftState) -> Question:
        lang = state.language
        options = (
            OptionView(CONTINUE, self._t(lang, "ui.continue")),
            OptionView(DELETE, self._t(lang, "ui.delete_report")),
        )
        return self._choice(lang, RESUME_STEP, "ui.unfinished", options)

    def _resume(
        self, state: DraftState, event: Event, now: datetime, channel: str
    ) -> tuple[DraftState | None, list[Outbound]]:
        if isinstance(event, Reply):
            typed: dict[str, Event] = {"1": Choose(CONTINUE), "2": Choose(DELETE), "0": Stop()}
            event = typed.get(event.text.strip(), Invalid())
        if isinstance(event, Choose) and event.option == CONTINUE:
            state = replace(state, resuming=False)
            return state, [self.question(state)]
        if isinstance(event, Stop) or (isinstance(event, Choose) and event.option == DELETE):
            return self._step(state, Stop(), now, channel)
        if isinstance(event, Start | ChangeLanguage):
            return state, [self.question(state)]
        return state, self._invalid(state)

    def _editable(self, state: DraftState) -> list[str]:
        answers = self.questionnaire.applicable_answers(state.answers)
        return [k for k in answers if k not in _NOT_EDITABLE]

    def _edit_question(self, state: DraftState) -> Question:
        lang = state.language
        options = tuple(
            OptionView(s, self._t(lang, self.questionnaire.step(s).review_key))
            for s in self._editable(state)
        )
        return self._choice(lang, EDIT_STEP, "ui.change_which", options)

    def _choice(
        self, lang: str, step: str, text_key: str, options: tuple[OptionView, ...]
    ) -> Question:
        """A single-choice question that is not a questionnaire step (resume, pick an answer)."""
        review = self.questionnaire.step("review")
        return Question(
            step=step,
            text=self._t(lang, text_key),
            options=options,
            multi=False,
            free_text=False,
            can_skip=False,
            labels=self._labels(lang, review) | {"kind": StepKind.CHOICE.value},
            language=lang,
        )

    def _pick_edit(self, state: DraftState, event: Event) -> tuple[DraftState, list[Outbound]]:
        if isinstance(event, Choose) and event.option in self._editable(state):
            answers = {k: v for k, v in state.answers.items() if k != event.option}
            state = replace(state, answers=answers, editing=False, pending=())
            return state, [self.question(state)]
        return state, self._invalid(state)

    def _advance(
        self, state: DraftState, step: Step, value: Answer
    ) -> tuple[DraftState, list[Outbound]]:
        answers = dict(state.answers)
        answers[step.id] = value
        sitting = None if state.sitting is None else (*state.sitting, step.id)
        state = replace(state, answers=answers, pending=(), sitting=sitting)
        return state, [self.question(state)]

    def _summary(self, state: DraftState) -> str:
        lang = state.language
        lines: list[str] = []
        if state.sitting is not None:
            # After a gap a seized phone shows nothing of the earlier sitting.
            lines.append(self._t(lang, "ui.review_after_gap"))
        for step_id, value in self.questionnaire.applicable_answers(state.answers).items():
            step = self.questionnaire.step(step_id)
            if step_id in _NOT_EDITABLE:
                continue
            if state.sitting is not None and step_id not in state.sitting:
                continue
            # Typed words are never echoed back: a seized phone must not show them.
            shown = answer_text(self.texts, lang, step, value, typed=False)
            lines.append(f"• {self._t(lang, step.review_key)}: {shown}")
        return "\n".join(lines)

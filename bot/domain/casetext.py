"""A case as text for its lawyer: every answer with its label, typed words included."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.questionnaire import REPORT, Questionnaire, Step, StepKind
from bot.domain.texts import Texts

_HIDDEN = frozenset({"consent", "language"})


@dataclass(frozen=True, slots=True)
class CaseText:
    """What a lawyer's view of a case is made of: its number, triage and answers."""

    number: int
    priority: int
    flags: Sequence[str]
    answers: Mapping[str, Any]


def answer_text(texts: Texts, language: str, step: Step, value: Any, *, typed: bool) -> str:
    """One answer as a person reads it; typed words only when ``typed`` (never to a reporter)."""
    if value is None:
        return texts.get(language, "ui.review_skipped")
    if step.kind is StepKind.TEXT:
        return (
            str(value) if typed else texts.get(language, "ui.review_text_given", count=len(value))
        )
    if step.kind is StepKind.ATTACHMENTS:
        return texts.get(language, "ui.review_files", count=len(value))
    if isinstance(value, list | tuple):
        return ", ".join(texts.get(language, step.option_key(str(v))) for v in value)
    return texts.get(language, step.option_key(str(value)))


def render_case(
    texts: Texts, language: str, case: CaseText, questionnaire: Questionnaire = REPORT
) -> str:
    """The text a lawyer reads for ``/case N``."""
    flags = case.flags
    lines = [f"#{case.number} P{case.priority}" + (f" [{', '.join(flags)}]" if flags else "")]
    for step in questionnaire.steps:
        if step.id in _HIDDEN or step.id not in case.answers or step.kind is StepKind.REVIEW:
            continue
        shown = answer_text(texts, language, step, case.answers[step.id], typed=True)
        lines.append(f"{texts.get(language, step.review_key)}: {shown}")
    return "\n".join(lines)

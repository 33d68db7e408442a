"""A case as text for its lawyer: every answer with its label, typed words included."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.domain.questionnaire import REPORT, Questionnaire, StepKind
from bot.domain.texts import Texts

_HIDDEN = frozenset({"consent", "language"})


def render_case(
    texts: Texts,
    language: str,
    number: int,
    priority: int,
    flags: Sequence[str],
    answers: Mapping[str, Any],
    questionnaire: Questionnaire = REPORT,
) -> str:
    """The text a lawyer reads for ``/case N``."""
    lines = [f"#{number} P{priority}" + (f" [{', '.join(flags)}]" if flags else "")]
    for step in questionnaire.steps:
        if step.id in _HIDDEN or step.id not in answers or step.kind is StepKind.REVIEW:
            continue
        value = answers[step.id]
        if value is None:
            shown = texts.get(language, "ui.review_skipped")
        elif step.kind is StepKind.TEXT:
            shown = str(value)
        elif step.kind is StepKind.ATTACHMENTS:
            shown = texts.get(language, "ui.review_files", count=len(value))
        elif isinstance(value, list | tuple):
            shown = ", ".join(texts.get(language, step.option_key(v)) for v in value)
        else:
            shown = texts.get(language, step.option_key(str(value)))
        lines.append(f"{texts.get(language, step.review_key)}: {shown}")
    return "\n".join(lines)

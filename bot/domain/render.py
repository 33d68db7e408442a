"""Plain-text rendering of questions and notices for channels without buttons (console, Signal)."""

from __future__ import annotations

from bot.domain.messages import Notice, Question


def render_numbered(question: Question) -> str:
    """A question as text with numbered options, ``0`` always meaning stop and delete."""
    labels = question.labels
    lines = [question.text, ""]
    kind = labels.get("kind")
    if question.free_text:
        lines.append(labels["hint_text"])
        if question.can_skip:
            lines.append(f"1 = {labels['skip']}")
    elif kind == "attachments":
        lines.append(labels["hint_files"])
        lines.append(f"1 = {labels['done']}")
    else:
        for number, option in enumerate(question.options, start=1):
            lines.append(f"{number} = {option.label}")
        lines.append("")
        lines.append(labels["hint_multi"] if question.multi else labels["hint_choice"])
    lines.append(f"0 = {labels['stop']}")
    return "\n".join(lines)


def render_notice(notice: Notice) -> str:
    """A notice as text, its actions as numbered options (the reply answers them)."""
    if not notice.actions:
        return notice.text
    options = [f"{n} = {a.label}" for n, a in enumerate(notice.actions, start=1)]
    return "\n".join([notice.text, "", *options])

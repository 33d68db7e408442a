"""What a reporter reads with their receipt code, the same on every channel."""

from __future__ import annotations

from bot.services.intake import IntakeService
from bot.services.lawyers import LawyerService


async def status_texts(
    intake: IntakeService, lawyers: LawyerService | None, code: str, language: str
) -> list[str]:
    """The case's status, then any lawyer messages waiting for the holder of the code."""
    texts = [(await intake.status(code, language)).text]
    if lawyers is not None:
        texts += await lawyers.reporter_messages(code, language)
    return texts

"""Loads the gettext catalogs under ``bot/locales`` that translators edit."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

from bot.domain.questionnaire import LANGUAGES
from bot.domain.texts import Texts

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "tipline"


def load_catalog(language: str, locales_dir: Path = LOCALES_DIR) -> dict[str, str]:
    """Key-to-text mapping of one language's catalog (untranslated entries left out)."""
    path = locales_dir / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    result: dict[str, str] = {}
    for message in catalog:
        key, text = message.id, message.string
        if key and isinstance(key, str) and text and isinstance(text, str) and not message.fuzzy:
            result[key] = text
    return result


@cache
def load_texts(languages: tuple[str, ...] = LANGUAGES) -> Texts:
    """Texts for the given languages (English is always loaded as the fallback)."""
    wanted = dict.fromkeys((*languages, "en"))
    return Texts({lang: load_catalog(lang) for lang in wanted})

"""Translated texts as plain data; loading them from the catalogs is the adapters' job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FALLBACK_LANGUAGE = "en"


class MissingText(KeyError):
    """A catalog key has no text in any language."""


@dataclass(frozen=True, slots=True)
class Texts:
    """Texts by language and key, with the English text as fallback."""

    catalogs: Mapping[str, Mapping[str, str]]

    def find(self, language: str, key: str, **params: object) -> str | None:
        """The text for ``key`` in ``language`` (English if untranslated), or None."""
        for lang in (language, FALLBACK_LANGUAGE):
            text = self.catalogs.get(lang, {}).get(key)
            if text:
                return text.format(**params) if params else text
        return None

    def get(self, language: str, key: str, **params: object) -> str:
        """Like :meth:`find`, but a key with no text at all is a programming error."""
        text = self.find(language, key, **params)
        if text is None:
            raise MissingText(key)
        return text

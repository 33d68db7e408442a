"""One grammar for every inbound text on every channel: a command, or an answer.

The slash is optional. Without it, a message is a command only when it is the keyword alone, or
the keyword followed by arguments of the shape that command takes (``status ABCD-EFGH-…``); so a
narrative that happens to start with "stop" or "help" stays an answer. Keywords are recognised
in English and in each supported language; the language a keyword was typed in is reported, so
that a reporter without a conversation is answered in it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.casework import parse_decision, parse_event
from bot.domain.receipt import MalformedReceipt, normalize_receipt


class Name(StrEnum):
    """Every command a messenger user can send."""

    START = "start"
    LANGUAGE = "language"
    CANCEL = "cancel"
    FORGET = "forget"
    STATUS = "status"
    REPLY = "reply"
    READ = "read"
    WITHDRAW = "withdraw"
    HELP = "help"
    REGISTER = "register"
    CASES = "cases"
    CASE = "case"
    ACCEPT = "accept"
    DECLINE = "decline"
    CLOSE = "close"
    EXTEND = "extend"
    EVENT = "event"
    DECISION = "decision"
    DEADLINES = "deadlines"
    EXPORT = "export"
    LOCK = "lock"
    #: A slash command nobody has: answered like a staff command refused.
    UNKNOWN = "unknown"


#: Commands of lawyers and admins; everyone else gets one generic answer to them.
STAFF = frozenset(
    {
        Name.REGISTER,
        Name.CASES,
        Name.CASE,
        Name.ACCEPT,
        Name.DECLINE,
        Name.CLOSE,
        Name.EXTEND,
        Name.EVENT,
        Name.DECISION,
        Name.DEADLINES,
        Name.EXPORT,
        Name.LOCK,
    }
)

#: Keywords by language; English is recognised everywhere, the rest add to it.
KEYWORDS: dict[str, dict[str, Name]] = {
    "en": {
        "start": Name.START,
        "language": Name.LANGUAGE,
        "cancel": Name.CANCEL,
        "stop": Name.CANCEL,
        "forget": Name.FORGET,
        "status": Name.STATUS,
        "reply": Name.REPLY,
        "read": Name.READ,
        "withdraw": Name.WITHDRAW,
        "help": Name.HELP,
        "register": Name.REGISTER,
        "cases": Name.CASES,
        "case": Name.CASE,
        "accept": Name.ACCEPT,
        "decline": Name.DECLINE,
        "close": Name.CLOSE,
        "extend": Name.EXTEND,
        "event": Name.EVENT,
        "decision": Name.DECISION,
        "deadlines": Name.DEADLINES,
        "export": Name.EXPORT,
        "lock": Name.LOCK,
    },
    "ru": {
        "старт": Name.START,
        "начать": Name.START,
        "язык": Name.LANGUAGE,
        "отмена": Name.CANCEL,
        "стоп": Name.CANCEL,
        "забыть": Name.FORGET,
        "статус": Name.STATUS,
        "ответ": Name.REPLY,
        "ответить": Name.REPLY,
        "прочитать": Name.READ,
        "отозвать": Name.WITHDRAW,
        "помощь": Name.HELP,
    },
    "az": {
        "başla": Name.START,
        "dil": Name.LANGUAGE,
        "ləğv": Name.CANCEL,
        "dayan": Name.CANCEL,
        "unut": Name.FORGET,
        "status": Name.STATUS,
        "cavab": Name.REPLY,
        "oxu": Name.READ,
        "geri": Name.WITHDRAW,
        "kömək": Name.HELP,
    },
}

_NUMBER = re.compile(r"^#?(\d{1,9})$")
_MAX_ARGS = 4000


@dataclass(frozen=True, slots=True)
class Command:
    """A recognised command with its arguments, already split and checked for shape."""

    name: Name
    #: The language the keyword was typed in (None for English or a slash command).
    language: str | None = None
    code: str | None = None  # a normalised receipt or invite code
    number: int | None = None  # a case or event number
    text: str = ""  # the rest: a reply, an outcome, a number of days, sub-arguments
    #: Typed without its arguments (``status`` alone): the service answers with how to use it.
    bare: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """Anything that is not a command: an answer to the current question."""

    text: str


def _split_code(args: str, counts: tuple[int, ...] = (1, 4)) -> tuple[str, str] | None:
    """A receipt or invite code at the start of ``args`` and what follows it."""
    words = args.split()
    # Typed as one word (ABCD-EFGH-JKLM-NOPQ) or as its four groups (ABCD EFGH JKLM NOPQ).
    for count in counts:
        if len(words) < count:
            break
        try:
            code = normalize_receipt("".join(words[:count]))
        except MalformedReceipt:
            continue
        return code, " ".join(words[count:])
    return None


def _split_number(args: str) -> tuple[int, str] | None:
    head, _, rest = args.partition(" ")
    match = _NUMBER.match(head)
    return (int(match.group(1)), rest.strip()) if match else None


Shape = Callable[[Name, str | None, str], Command | None]


def _nothing(name: Name, lang: str | None, args: str) -> Command | None:
    return None if args else Command(name, lang)


def _code(name: Name, lang: str | None, args: str) -> Command | None:
    if not args:
        return Command(name, lang, bare=True)
    split = _split_code(args)
    if split is None or split[1]:
        return None
    return Command(name, lang, code=split[0])


def _reply(name: Name, lang: str | None, args: str) -> Command | None:
    if not args:
        return Command(name, lang, bare=True)
    # A lawyer's "reply 1 Bring the summons" must not read as the four-group code IBRINGTHESUMMONS:
    # a one-word code first, then a case number, then a code typed in four groups.
    split = _split_code(args, (1,))
    number = None if split else _split_number(args)
    if number is not None:
        return Command(name, lang, number=number[0], text=number[1], bare=not number[1])
    split = split or _split_code(args, (4,))
    if split is not None:
        return Command(name, lang, code=split[0], text=split[1], bare=not split[1])
    return None


def _number(name: Name, lang: str | None, args: str) -> Command | None:
    if not args:
        return Command(name, lang, bare=True)
    number = _split_number(args)
    return None if number is None else Command(name, lang, number=number[0], text=number[1])


def _free(name: Name, lang: str | None, args: str) -> Command | None:
    return Command(name, lang, text=args, bare=not args)


def _number_alone(name: Name, lang: str | None, args: str) -> Command | None:
    if not args:
        return Command(name, lang, bare=True)
    number = _split_number(args)
    return None if number is None or number[1] else Command(name, lang, number=number[0])


def _event(name: Name, lang: str | None, args: str) -> Command | None:
    # Strict, so that a reporter's words that start with "event" stay an answer.
    if not args:
        return Command(name, lang, bare=True)
    return Command(name, lang, text=args) if parse_event(args) is not None else None


def _decision(name: Name, lang: str | None, args: str) -> Command | None:
    if not args:
        return Command(name, lang, bare=True)
    number = _split_number(args)
    if number is None or parse_decision(number[0], number[1]) is None:
        return None
    return Command(name, lang, number=number[0], text=number[1])


_SHAPES: dict[Name, Shape] = {
    Name.START: _nothing,
    Name.LANGUAGE: _nothing,
    Name.CANCEL: _nothing,
    Name.FORGET: _nothing,
    Name.STATUS: _code,
    Name.REPLY: _reply,
    Name.READ: _nothing,
    Name.WITHDRAW: _code,
    Name.HELP: _nothing,
    Name.REGISTER: _code,
    Name.CASES: _nothing,
    Name.CASE: _number,
    Name.ACCEPT: _number,
    Name.DECLINE: _number,
    Name.CLOSE: _number,
    Name.EXTEND: _number,
    Name.EVENT: _event,
    Name.DECISION: _decision,
    Name.DEADLINES: _nothing,
    Name.EXPORT: _number_alone,
    Name.LOCK: _nothing,
    Name.UNKNOWN: _free,
}


def _keyword(word: str, languages: tuple[str, ...]) -> tuple[Name, str | None] | None:
    word = unicodedata.normalize("NFC", word).casefold()
    if word in KEYWORDS["en"]:
        return KEYWORDS["en"][word], None
    for language in languages:
        name = KEYWORDS.get(language, {}).get(word)
        if name is not None:
            return name, language
    return None


def parse(text: str, languages: tuple[str, ...] = ("az", "ru", "en")) -> Command | Answer:
    """Read one inbound text as a command or an answer."""
    stripped = text.strip()
    if not stripped or len(stripped) > _MAX_ARGS:
        return Answer(text)
    head, _, args = stripped.partition(" ")
    args = args.strip()
    slash = head.startswith("/")
    # ``/Start@tipline_bot`` names the command ``start``.
    found = _keyword(head[1:].split("@")[0] if slash else head, languages)
    if found is None:
        return Command(Name.UNKNOWN) if slash and len(head) > 1 else Answer(text)
    name, language = found
    command = _SHAPES[name](name, language, args)
    if command is not None:
        return command
    # A slash command with arguments of the wrong shape is still that command, used wrongly.
    return Command(name, language, text=args, bare=True) if slash else Answer(text)


def command_name(word: str) -> str:
    """The command named by a message's first word, lowercased; empty when it is not one."""
    return word[1:].split("@")[0].lower() if word.startswith("/") else ""

"""The reporter questionnaire as data: steps, kinds, options and branching (DESIGN.md section 6).

Texts are not here: each step's prompt is the catalog key ``step.<id>``, each option's label
``opt.<step>.<option>`` and each review label ``review.<id>`` (see ``bot/locales``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: An answer: an option id, several option ids, free text, attachment refs, or None (skipped).
Answer = str | tuple[str, ...] | None


class StepKind(StrEnum):
    """How a step is answered."""

    CHOICE = "choice"
    MULTI = "multi"
    TEXT = "text"
    ATTACHMENTS = "attachments"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Condition:
    """A step applies only when an earlier answer is (for multi steps: includes) one of these."""

    step: str
    any_of: frozenset[str]
    negate: bool = False

    def holds(self, answers: Mapping[str, Answer]) -> bool:
        """Whether the condition is met by the given answers."""
        value = answers.get(self.step)
        if isinstance(value, tuple):
            hit = bool(self.any_of.intersection(value))
        else:
            hit = value in self.any_of
        return hit != self.negate


@dataclass(frozen=True, slots=True)
class Step:
    """One question of the questionnaire."""

    id: str
    kind: StepKind
    options: tuple[str, ...] = ()
    optional: bool = False
    max_length: int = 0
    when: Condition | None = None

    @property
    def prompt_key(self) -> str:
        """Catalog key of the question text."""
        return f"step.{self.id}"

    @property
    def review_key(self) -> str:
        """Catalog key of the short label shown in the review summary."""
        return f"review.{self.id}"

    def option_key(self, option: str) -> str:
        """Catalog key of an option's label."""
        return f"opt.{self.id}.{option}"

    def applies(self, answers: Mapping[str, Answer]) -> bool:
        """Whether this step is asked, given the answers so far."""
        return self.when is None or self.when.holds(answers)


@dataclass(frozen=True, slots=True)
class Questionnaire:
    """An ordered list of steps; the next step is always the first applicable unanswered one."""

    steps: tuple[Step, ...]
    languages: tuple[str, ...]
    by_id: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {s.id: s for s in self.steps})
        if len(self.by_id) != len(self.steps):
            raise ValueError("duplicate step id")
        for step in self.steps:
            if step.when is not None and step.when.step not in self.by_id:
                raise ValueError(f"step {step.id} depends on unknown step {step.when.step}")

    def step(self, step_id: str) -> Step:
        """The step with this id."""
        return self.by_id[step_id]

    def next_step(self, answers: Mapping[str, Answer]) -> Step:
        """The first applicable step without an answer (the review step when all are answered)."""
        for step in self.steps:
            if step.kind is StepKind.REVIEW:
                return step
            if step.id not in answers and step.applies(answers):
                return step
        raise ValueError("questionnaire has no review step")

    def applicable_answers(self, answers: Mapping[str, Answer]) -> dict[str, Answer]:
        """The answers of the steps that apply, in questionnaire order (stale branches dropped)."""
        result: dict[str, Answer] = {}
        for step in self.steps:
            if step.id in answers and step.applies(result):
                result[step.id] = answers[step.id]
        return result

    def texts_keys(self) -> Sequence[str]:
        """Every catalog key the questionnaire needs, for catalog completeness checks."""
        keys: list[str] = []
        for step in self.steps:
            keys.append(step.prompt_key)
            if step.kind is not StepKind.REVIEW:
                keys.append(step.review_key)
            keys.extend(step.option_key(o) for o in step.options)
        return keys


def _is(step: str, *values: str, negate: bool = False) -> Condition:
    return Condition(step, frozenset(values), negate)


LANGUAGES: tuple[str, ...] = ("az", "ru", "en")

#: Limits on free text, chosen so one answer fits a messenger message and a person's patience.
PLACE_MAX = 300
DISTRICT_MAX = 100
OWN_WORDS_MAX = 4000

WHAT_HAPPENED = (
    "detained",
    "beaten",
    "threats",
    "forced_medical",
    "phone_searched",
    "forced_to_name",
    "fined_charged",
    "outed",
    "blackmail",
    "other",
)

REPORT = Questionnaire(
    languages=LANGUAGES,
    steps=(
        Step("language", StepKind.CHOICE, LANGUAGES),
        Step("consent", StepKind.CHOICE, ("agree",)),
        Step("about", StepKind.CHOICE, ("myself", "someone_else")),
        Step(
            "situation",
            StepKind.CHOICE,
            ("detained_now", "released", "summoned", "other_incident"),
        ),
        Step(
            "held_place",
            StepKind.TEXT,
            optional=True,
            max_length=PLACE_MAX,
            when=_is("situation", "detained_now"),
        ),
        Step(
            "held_since",
            StepKind.CHOICE,
            ("under_3h", "today", "days_1_3", "over_3_days"),
            when=_is("situation", "detained_now"),
        ),
        Step(
            "when",
            StepKind.CHOICE,
            ("today", "last_3_days", "last_week", "last_month", "earlier"),
            when=_is("situation", "detained_now", negate=True),
        ),
        Step("city", StepKind.CHOICE, ("baku", "ganja", "sumgait", "other")),
        Step("district", StepKind.TEXT, optional=True, max_length=DISTRICT_MAX),
        Step("what_happened", StepKind.MULTI, WHAT_HAPPENED),
        Step("injured", StepKind.CHOICE, ("yes", "no")),
        Step("under18", StepKind.CHOICE, ("yes", "no")),
        Step("needs_lawyer", StepKind.CHOICE, ("urgently", "yes", "documenting")),
        Step("own_words", StepKind.TEXT, optional=True, max_length=OWN_WORDS_MAX),
        Step("documents", StepKind.ATTACHMENTS, optional=True),
        Step("contact", StepKind.CHOICE, ("here", "code")),
        Step("review", StepKind.REVIEW, ("submit", "change")),
    ),
)

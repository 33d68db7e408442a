"""Every branch of the questionnaire engine, its validation, and its catalogs."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.engine import MAX_ATTACHMENTS, CorruptState, DraftState, Engine
from bot.domain.messages import (
    AttachmentAdded,
    ChangeLanguage,
    Choose,
    ChooseMany,
    Done,
    DraftDeleted,
    Invalid,
    Notice,
    Question,
    Reply,
    Skip,
    Start,
    Stop,
    SubmitReport,
    TextAnswer,
    Toggle,
)
from bot.domain.questionnaire import OWN_WORDS_MAX, REPORT, Condition, Questionnaire, Step, StepKind
from bot.domain.render import render_numbered
from bot.i18n import load_catalog
from tests.conftest import START
from tests.helpers import CANARY, DETAINED_NOW, DOCUMENTING, last_question, walk


def notices(out: list[object]) -> list[str]:
    return [m.text for m in out if isinstance(m, Notice)]


def test_detained_now_branch_asks_where_and_since_but_not_when(engine_: Engine) -> None:
    asked, report = walk(engine_, DETAINED_NOW, START)
    assert "held_place" in asked and "held_since" in asked
    assert "when" not in asked
    assert report.answers["what_happened"] == ("detained", "phone_searched")
    assert report.answers["held_place"] == f"Police station 9 {CANARY}"
    assert report.language == "en"
    assert report.submitted_at == START


def test_other_branches_ask_when_and_skip_detention_steps(engine_: Engine) -> None:
    asked, report = walk(engine_, DOCUMENTING, START)
    assert "when" in asked
    assert "held_place" not in asked and "held_since" not in asked
    assert report.answers["district"] is None
    assert report.answers["own_words"] is None
    assert report.answers["documents"] is None
    assert report.language == "ru"


@pytest.mark.parametrize("situation", ["released", "summoned", "other_incident"])
def test_every_situation_reaches_review(engine_: Engine, situation: str) -> None:
    script = dict(DOCUMENTING) | {"situation": Choose(situation)}
    asked, report = walk(engine_, script, START)
    assert asked[-1] == "review"
    assert report.answers["situation"] == situation


def test_supported_language_hint_skips_language_question(engine_: Engine) -> None:
    asked, report = walk(engine_, DETAINED_NOW, START, hint="az-AZ")
    assert asked[0] == "consent"
    assert report.language == "az"


def test_unsupported_language_hint_asks_in_english(engine_: Engine) -> None:
    _state, out = engine_.step(None, Start("de"), START)
    question = last_question(out)
    assert question.step == "language"
    assert question.text == "Choose your language."


def test_consent_mentions_the_channel(engine_: Engine) -> None:
    _, out = engine_.step(None, Start("en"), START, channel="telegram")
    assert "Telegram can read chats with bots" in last_question(out).text


def test_change_language_asks_again_and_switches(engine_: Engine) -> None:
    state, _ = engine_.step(None, Start("en"), START)
    assert state is not None
    state, out = engine_.step(state, ChangeLanguage(), START)
    assert last_question(out).step == "language"
    assert state is not None
    state, out = engine_.step(state, Choose("ru"), START)
    assert state is not None and state.language == "ru"
    assert last_question(out).text.startswith("Это конфиденциальная линия")


@pytest.mark.parametrize("step_id", [s.id for s in REPORT.steps])
def test_stop_at_every_step_deletes_the_draft(engine_: Engine, step_id: str) -> None:
    state, out = engine_.step(None, Start(), START)
    script = dict(DETAINED_NOW) | {"situation": Choose("released"), "when": Choose("today")}
    if step_id in ("held_place", "held_since"):
        script = dict(DETAINED_NOW)
    for _ in range(40):
        question = last_question(out)
        if question.step == step_id:
            break
        assert state is not None
        state, out = engine_.step(state, script[question.step], START)
    assert last_question(out).step == step_id
    state, out = engine_.step(state, Stop(), START)
    assert state is None
    assert any(isinstance(m, DraftDeleted) for m in out)
    (said,) = notices(out)
    assert said.startswith("Stopped. Your answers have been deleted; within the hour")


def _at(engine_: Engine, step_id: str) -> DraftState:
    state, out = engine_.step(None, Start("en"), START)
    script = dict(DETAINED_NOW)
    while last_question(out).step != step_id:
        assert state is not None
        state, out = engine_.step(state, script[last_question(out).step], START)
    assert state is not None
    return state


def test_choice_out_of_range_is_a_calm_repeat(engine_: Engine) -> None:
    state = _at(engine_, "situation")
    for event in (Choose("nonsense"), Reply("9"), Reply("-1"), Reply("two"), Invalid(), Done()):
        new, out = engine_.step(state, event, START)
        assert new == state
        assert notices(out)[0].startswith("Sorry, I did not understand")
        assert last_question(out).step == "situation"


def test_numbered_reply_picks_the_option(engine_: Engine) -> None:
    state = _at(engine_, "situation")
    new, _ = engine_.step(state, Reply(" 2 "), START)
    assert new is not None and new.answers["situation"] == "released"
    new, out = engine_.step(state, Reply("0"), START)
    assert new is None and any(isinstance(m, DraftDeleted) for m in out)


def test_multi_select_toggles_then_done(engine_: Engine) -> None:
    state = _at(engine_, "what_happened")
    state2, out = engine_.step(state, Done(), START)
    assert state2 == state and "at least one" in notices(out)[0]
    s, out = engine_.step(state, Toggle("beaten"), START)
    assert s is not None
    s, out = engine_.step(s, Toggle("outed"), START)
    assert s is not None
    s, out = engine_.step(s, Toggle("beaten"), START)
    assert s is not None
    assert [o.id for o in last_question(out).options if o.selected] == ["outed"]
    s, out = engine_.step(s, Done(), START)
    assert s is not None and s.answers["what_happened"] == ("outed",)


def test_multi_select_numbered(engine_: Engine) -> None:
    state = _at(engine_, "what_happened")
    s, _ = engine_.step(state, Reply("5, 1 3"), START)
    assert s is not None and s.answers["what_happened"] == ("detained", "threats", "phone_searched")
    for bad in ("11", "0,1", "1,,x", ""):
        s, _out = engine_.step(state, Reply(bad), START)
        if bad.startswith("0"):
            continue
        assert s == state, bad


def test_text_validation(engine_: Engine) -> None:
    state = _at(engine_, "own_words")
    s, out = engine_.step(state, TextAnswer("   \n\t "), START)
    assert s == state and notices(out)[0].startswith("The answer is empty")
    s, out = engine_.step(state, TextAnswer("x" * 100_000), START)
    assert s == state and str(OWN_WORDS_MAX) in notices(out)[0]
    s, out = engine_.step(state, Choose("yes"), START)
    assert s == state and notices(out)[0].startswith("Please type")
    s, _ = engine_.step(state, TextAnswer("a\x00b\u202ec "), START)
    assert s is not None and s.answers["own_words"] == "abc"
    s, _ = engine_.step(state, Reply("1"), START)
    assert s is not None and s.answers["own_words"] is None


def test_required_step_cannot_be_skipped(engine_: Engine) -> None:
    state = _at(engine_, "city")
    s, out = engine_.step(state, Skip(), START)
    assert s == state and notices(out)


def test_attachments_collect_refs_until_done(engine_: Engine) -> None:
    state = _at(engine_, "documents")
    s: DraftState | None = state
    for i in range(MAX_ATTACHMENTS):
        assert s is not None
        s, out = engine_.step(s, AttachmentAdded(f"ref{i}"), START)
        assert f"({i + 1})" in notices(out)[0]
    assert s is not None
    s2, out = engine_.step(s, AttachmentAdded("one-too-many"), START)
    assert s2 == s and str(MAX_ATTACHMENTS) in notices(out)[0]
    s, _ = engine_.step(s, TextAnswer("words instead of a file"), START)
    assert s is not None and last_question(engine_.step(s, Start(), START)[1]).step == "documents"
    s, _ = engine_.step(s, Done(), START)
    assert s is not None and s.answers["documents"] == tuple(f"ref{i}" for i in range(10))


def test_review_never_echoes_typed_words(engine_: Engine) -> None:
    state = _at(engine_, "review")
    question = engine_.question(state)
    assert CANARY not in question.text
    assert "written (" in question.text
    assert "Detained right now" in question.text


def test_change_an_answer_reroutes_and_drops_stale_branch(engine_: Engine) -> None:
    state = _at(engine_, "review")
    s, out = engine_.step(state, Choose("change"), START)
    assert s is not None and last_question(out).step == "review.change"
    assert "consent" not in [o.id for o in last_question(out).options]
    s, out = engine_.step(s, Reply("3"), START)  # language, about, situation
    assert s is not None and last_question(out).step == "situation"
    s, out = engine_.step(s, Choose("released"), START)
    assert s is not None and last_question(out).step == "when"
    s, out = engine_.step(s, Choose("today"), START)
    assert s is not None and last_question(out).step == "review"
    s, out = engine_.step(s, Choose("submit"), START)
    report = next(m for m in out if isinstance(m, SubmitReport))
    assert "held_place" not in report.answers and "held_since" not in report.answers
    assert report.answers["when"] == "today"


def test_change_pick_out_of_range(engine_: Engine) -> None:
    state = _at(engine_, "review")
    s, _ = engine_.step(state, Choose("change"), START)
    s2, out = engine_.step(s, Reply("99"), START)
    assert s2 == s and last_question(out).step == "review.change"


def test_start_again_resumes(engine_: Engine) -> None:
    state = _at(engine_, "city")
    s, out = engine_.step(state, Start("ru"), START)
    assert s == state
    assert notices(out)[0].startswith("Welcome back")
    assert last_question(out).step == "city"


def test_state_round_trip_and_corruption(engine_: Engine) -> None:
    state = _at(engine_, "review")
    assert DraftState.from_dict(state.to_dict()) == state
    for bad in (
        {},
        {"v": 99},
        {**state.to_dict(), "answers": {"x": 3}},
        {**state.to_dict(), "answers": 5},
    ):
        with pytest.raises(CorruptState):
            DraftState.from_dict(bad)


def test_numbered_rendering_always_offers_stop(engine_: Engine) -> None:
    state = _at(engine_, "what_happened")
    text = render_numbered(engine_.question(state))
    assert "10 = Something else" in text
    assert text.rstrip().endswith("0 = Stop and delete")
    text = render_numbered(engine_.question(_at(engine_, "district")))
    assert "1 = Skip" in text


def test_questionnaire_rejects_bad_definitions() -> None:
    review = Step("review", StepKind.REVIEW, ("submit",))
    with pytest.raises(ValueError, match="duplicate"):
        Questionnaire((review, review), ("en",))
    dangling = Step("a", StepKind.CHOICE, ("x",), when=Condition("nope", frozenset({"x"})))
    with pytest.raises(ValueError, match="unknown step"):
        Questionnaire((dangling, review), ("en",))


@pytest.mark.parametrize("language", ["en", "ru", "az"])
def test_catalogs_are_complete_with_the_same_placeholders(language: str) -> None:
    english = load_catalog("en")
    catalog = load_catalog(language)
    needed = set(REPORT.texts_keys()) | set(english)
    assert needed - set(catalog) == set()
    for key, text in catalog.items():
        assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", english[key])), key


events = st.one_of(
    st.builds(Start, st.one_of(st.none(), st.sampled_from(["en", "ru", "az", "de", "", "xx-YY"]))),
    st.builds(Choose, st.text(max_size=20)),
    st.builds(
        Choose,
        st.sampled_from(
            [
                "en",
                "agree",
                "detained_now",
                "baku",
                "yes",
                "no",
                "submit",
                "change",
                "here",
                "situation",
            ]
        ),
    ),
    st.builds(
        ChooseMany, st.lists(st.sampled_from(["detained", "beaten", "x"]), max_size=4).map(tuple)
    ),
    st.builds(Toggle, st.sampled_from(["detained", "beaten", "nonsense"])),
    st.just(Done()),
    st.just(Skip()),
    st.builds(TextAnswer, st.text(max_size=300)),
    st.builds(Reply, st.one_of(st.text(max_size=30), st.integers(-3, 20).map(str))),
    st.builds(AttachmentAdded, st.text(min_size=1, max_size=10)),
    st.just(Invalid()),
    st.just(ChangeLanguage()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=60))
def test_fuzzed_event_sequences_never_crash(sequence: list[object]) -> None:
    from bot.i18n import load_texts

    engine = Engine(REPORT, load_texts())
    state: DraftState | None = None
    for event in sequence:
        state, out = engine.step(state, event, START)  # type: ignore[arg-type]
        assert out, "every event gets an answer"
        if state is not None:
            assert DraftState.from_dict(state.to_dict()) == state
            assert any(isinstance(m, Question) for m in out)
            state = replace(state)

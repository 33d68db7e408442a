"""What a new passphrase must withstand before it seals the keyring (``init``, ``rotate --root``).

A seized disk is attacked offline, at the attacker's pace: the passphrase must be hard to guess
and every guess must cost Argon2id at RFC 9106's second recommended setting or more.
"""

from __future__ import annotations

from zxcvbn import zxcvbn

from bot.config import Profile
from storage.keyring import Argon2Cost, KeyringError, Passphrase, RootSecret

#: RFC 9106, section 4, second recommended option: t=3, p=4, 64 MiB.
ARGON2_FLOOR = Argon2Cost(iterations=3, memory_kib=64 * 1024, lanes=4)
#: zxcvbn's top score: "strong protection from an offline slow-hash attack" (10^10 guesses).
MIN_SCORE = 4


class WeakKey(KeyringError):
    """A new passphrase or Argon2id cost is too weak; the message says why in one line."""


def check_cost(cost: Argon2Cost, profile: Profile) -> None:
    """Refuse Argon2id costs below the floor, unless this is an explicit test profile."""
    if profile is Profile.TEST:
        return
    floor = ARGON2_FLOOR
    if (
        cost.memory_kib < floor.memory_kib
        or cost.iterations < floor.iterations
        or cost.lanes < floor.lanes
    ):
        raise WeakKey(
            "the Argon2id cost is below RFC 9106's recommendation (64 MiB, t=3, p=4): raise "
            "TIPLINE_ARGON2_MEMORY_KIB, TIPLINE_ARGON2_ITERATIONS, TIPLINE_ARGON2_LANES"
        )


def check_passphrase(secret: Passphrase) -> None:
    """Refuse a passphrase that the zxcvbn estimator rates below its top score."""
    try:
        text = secret.secret.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WeakKey("the passphrase is not valid UTF-8 text") from exc
    verdict = zxcvbn(text)
    score = int(verdict["score"])
    if score >= MIN_SCORE:
        return
    feedback = verdict.get("feedback") or {}
    reason = str(feedback.get("warning") or "it is easy to guess").rstrip(".")
    raise WeakKey(
        f"the passphrase is too weak (strength {score} of 4: {reason[:1].lower()}{reason[1:]}); "
        "use six or more random words"
    )


def check_new_root(secret: RootSecret, cost: Argon2Cost, profile: Profile) -> None:
    """The checks for a passphrase about to seal the keyring; a key file (development) has none."""
    if isinstance(secret, Passphrase):
        check_cost(cost, profile)
        check_passphrase(secret)

"""Tests for core.identifiers (resident IDs and unified social credit codes)."""

import random
from datetime import date

import pytest

from core.identifiers import (
    CreditCode,
    InvalidIdentifier,
    ResidentID,
    credit_code_check_char,
    generate_credit_code,
    generate_resident_id,
    lookup_hash,
    mask_credit_code,
    mask_resident_id,
    organisation_code_check_char,
    resident_id_check_char,
    validate_credit_code,
    validate_resident_id,
)

RID = "11010519491231002X"
USCC = "91350100M000100Y43"
TODAY = date(2025, 6, 1)
KEY = b"k" * 32


def _with_check(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def _rejects_rid(text: str, reason_part: str, **kw) -> InvalidIdentifier:
    with pytest.raises(InvalidIdentifier) as info:
        validate_resident_id(text, **kw)
    exc = info.value
    assert exc.kind == "resident_id"
    assert reason_part in exc.reason
    assert str(exc) == f"invalid resident ID: {exc.reason}"
    if len(text.strip()) >= 8:  # the value itself must never appear in the message
        assert text.strip() not in str(exc) and text.strip().upper() not in str(exc)
    return exc


def _rejects_uscc(text: str, reason_part: str) -> InvalidIdentifier:
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code(text)
    exc = info.value
    assert exc.kind == "credit_code"
    assert reason_part in exc.reason
    assert str(exc) == f"invalid unified social credit code: {exc.reason}"
    assert text.strip().upper() not in str(exc)
    return exc


# ----------------------------------------------------------------- resident ID


def test_known_valid_resident_id():
    rid = validate_resident_id(RID, today=TODAY)
    assert isinstance(rid, ResidentID)
    assert rid.value == RID
    assert rid.birth_date == date(1949, 12, 31)
    assert rid.sex == "female"  # 17th digit 2
    assert rid.region_code == "110105"
    assert rid.masked() == "110***********002X"


def test_resident_id_repr_is_masked():
    rid = validate_resident_id(RID)
    assert RID not in repr(rid) and RID not in str(rid)
    assert "110***********002X" in repr(rid)


def test_lowercase_x_and_whitespace_accepted():
    assert validate_resident_id("  11010519491231002x\n").value == RID


def test_sex_male_for_odd_sequence():
    value = generate_resident_id("110105", date(1980, 1, 1), 1)
    assert validate_resident_id(value).sex == "male"


def test_resident_id_wrong_length():
    _rejects_rid(RID[:17], "must be 18 characters, got 17")
    _rejects_rid(RID + "1", "must be 18 characters, got 19")
    _rejects_rid("", "must be 18 characters, got 0")


def test_resident_id_15_digit_rejected():
    _rejects_rid("110105491231002", "15-digit IDs from before 1999 are not accepted")


def test_resident_id_bad_character():
    exc = _rejects_rid("1101A519491231002X", "character 'A' at position 5 is not allowed")
    assert "digit" in exc.reason
    _rejects_rid("11010519491231002Y", "character 'Y' at position 18 is not allowed")
    _rejects_rid("1101051949123100X2", "character 'X' at position 17 is not allowed")


def test_resident_id_non_string():
    with pytest.raises(InvalidIdentifier, match="must be a string"):
        validate_resident_id(110105194912310020)


def test_resident_id_bad_region():
    _rejects_rid(_with_check("99010519491231002"), "region code starts with 99")
    _rejects_rid(_with_check("20010519491231002"), "not a province-level code")


def test_resident_id_impossible_date():
    _rejects_rid(_with_check("11010519491331002"), "birth date 19491331 is not a real date")
    _rejects_rid(_with_check("11010519490230002"), "birth date 19490230 is not a real date")
    _rejects_rid(_with_check("11010519230229002"), "birth date 19230229 is not a real date")


def test_resident_id_leap_day_ok():
    assert validate_resident_id(_with_check("11010520000229002")).birth_date == date(2000, 2, 29)


def test_resident_id_year_before_1900():
    _rejects_rid(_with_check("11010518991231002"), "birth year 1899 is before 1900")


def test_resident_id_future_date():
    value = _with_check("11010520250602002")
    _rejects_rid(value, "birth date 20250602 is in the future", today=TODAY)
    assert validate_resident_id(value, today=date(2025, 6, 2)).birth_date == date(2025, 6, 2)
    _rejects_rid(_with_check("11010521000101002"), "is in the future")  # real today


def test_resident_id_wrong_check_char():
    _rejects_rid("110105194912310025", "check character should be 'X', not '5'")
    _rejects_rid("110105194912310021", "check character should be 'X', not '1'")


def test_check_catches_every_single_substitution():
    rng = random.Random(1999)
    provinces = ["11", "31", "44", "50", "65", "71", "81", "82"]
    for _ in range(2000):
        region = rng.choice(provinces) + f"{rng.randrange(10000):04d}"
        birth = date.fromordinal(rng.randrange(date(1900, 1, 1).toordinal(), TODAY.toordinal()))
        value = generate_resident_id(region, birth, rng.randrange(1000))
        assert validate_resident_id(value, today=TODAY).value == value
        pos = rng.randrange(18)
        choices = "0123456789X" if pos == 17 else "0123456789"
        new = rng.choice([c for c in choices if c != value[pos]])
        mutated = value[:pos] + new + value[pos + 1 :]
        # The mod-11 check alone must catch it, whatever else might also be wrong.
        assert resident_id_check_char(mutated[:17]) != mutated[17]
        with pytest.raises(InvalidIdentifier):
            validate_resident_id(mutated, today=TODAY)


def test_generate_resident_id_rejects_bad_input():
    with pytest.raises(ValueError):
        generate_resident_id("990105", date(1980, 1, 1), 1)
    with pytest.raises(ValueError):
        generate_resident_id("11010", date(1980, 1, 1), 1)
    with pytest.raises(ValueError):
        generate_resident_id("110105", date(1980, 1, 1), 1000)
    with pytest.raises(ValueError):
        generate_resident_id("110105", date(1899, 1, 1), 1)


# ----------------------------------------------------------------- credit code


def test_known_valid_credit_code():
    code = validate_credit_code(USCC)
    assert isinstance(code, CreditCode)
    assert code.value == USCC
    assert code.organisation_code == "M000100Y4"
    assert organisation_code_check_char("M000100Y") == "4"
    assert code.masked() == "913501********0Y43"
    assert USCC not in repr(code)


def test_credit_code_lowercase_accepted():
    assert validate_credit_code(" 91350100m000100y43 ").value == USCC


def test_credit_code_wrong_length():
    _rejects_uscc(USCC[:17], "must be 18 characters, got 17")


def test_credit_code_excluded_letters():
    for letter in "IOZSV":
        bad = USCC[:8] + letter + USCC[9:]
        _rejects_uscc(bad, f"character '{letter}' at position 9 is not allowed (the alphabet excludes I, O, Z, S, V)")
    _rejects_uscc(USCC[:17] + "-", "character '-' at position 18 is not allowed")


def test_credit_code_region_must_be_digits():
    _rejects_uscc("9135A100M000100Y43", "character 'A' at position 5 is not allowed (region code must be digits)")


def test_credit_code_wrong_check_char():
    _rejects_uscc("91350100M000100Y44", "check character should be '3', not '4'")


def test_credit_code_wrong_organisation_check():
    prefix = "91350100M000100Y5"
    _rejects_uscc(prefix + credit_code_check_char(prefix), "organisation code check character at position 17 should be '4', not '5'")


def test_credit_code_check_catches_single_substitutions():
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    for pos in range(18):
        for c in alphabet:
            if c == USCC[pos]:
                continue
            mutated = USCC[:pos] + c + USCC[pos + 1 :]
            assert credit_code_check_char(mutated[:17]) != mutated[17]


def test_generate_credit_code_round_trip():
    rng = random.Random(32100)
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    for _ in range(500):
        body = "".join(rng.choice(alphabet) for _ in range(8))
        prefix = rng.choice("159Y") + rng.choice(alphabet) + f"{rng.randrange(10**6):06d}" + body
        prefix += organisation_code_check_char(body)
        if prefix[-1] not in alphabet:
            continue  # inner check char can't be represented in the credit-code alphabet
        value = generate_credit_code(prefix)
        assert validate_credit_code(value).value == value
    assert generate_credit_code(USCC[:17].lower()) == USCC


def test_generate_credit_code_rejects_bad_prefix():
    with pytest.raises(InvalidIdentifier, match="position 9"):
        generate_credit_code("91350100O000100Y4")
    with pytest.raises(InvalidIdentifier, match="prefix must be 17 characters"):
        generate_credit_code("9135")


# ----------------------------------------------------------------- masking


def test_masking_full_length():
    assert mask_resident_id(RID) == "110***********002X"
    assert mask_resident_id(RID.lower()) == "110***********002X"
    assert mask_credit_code(USCC) == "913501********0Y43"


@pytest.mark.parametrize("text", ["", "1", "1234567", "abc", "  12  "])
def test_masking_short_input_is_all_stars(text):
    assert set(mask_resident_id(text)) <= {"*"}
    assert set(mask_credit_code(text)) <= {"*"}
    assert len(mask_resident_id(text)) == len(text.strip())


@pytest.mark.parametrize("text", ["12345678", "110105491231002", "x" * 30, "1101051949123100", "hello world!"])
def test_masking_garbage_reveals_at_most_40_percent(text):
    for masked in (mask_resident_id(text), mask_credit_code(text)):
        assert len(masked) == len(text)
        assert sum(c != "*" for c in masked) <= 0.4 * len(text)


def test_masking_accepts_non_string():
    assert mask_resident_id(None) == "****"


# ----------------------------------------------------------------- lookup hash


def test_lookup_hash_deterministic_and_normalised():
    h = lookup_hash(KEY, "resident_id", RID)
    assert h == lookup_hash(KEY, "resident_id", RID)
    assert h == lookup_hash(KEY, "resident_id", " 11010519491231002x ")
    assert len(h) == 64 and int(h, 16) >= 0
    assert RID not in h


def test_lookup_hash_is_keyed():
    assert lookup_hash(KEY, "resident_id", RID) != lookup_hash(b"j" * 32, "resident_id", RID)


def test_lookup_hash_is_kind_separated():
    same = "123456789012345678"
    assert lookup_hash(KEY, "resident_id", same) != lookup_hash(KEY, "credit_code", same)


def test_lookup_hash_rejects_short_key_and_unknown_kind():
    with pytest.raises(ValueError, match="16 bytes"):
        lookup_hash(b"short", "resident_id", RID)
    with pytest.raises(ValueError):
        lookup_hash(KEY, "passport", RID)

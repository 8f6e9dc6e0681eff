"""GSM 7-bit alphabet, septet packing, UCS-2, and splitting and joining concatenated messages."""

from __future__ import annotations

import random

import pytest

from ums.sms.gsm import (
    DCS_GSM7,
    DCS_UCS2,
    GSM7_ALPHABET,
    GSM7_EXTENSION,
    IEI_CONCAT_8BIT,
    IEI_CONCAT_16BIT,
    SmsFormatError,
    SmsPart,
    SmsTooLong,
    build_udh,
    choose_encoding,
    decode_gsm7,
    encode_gsm7,
    fill_bits_after,
    gsm7_encodable,
    join_sms,
    pack_septets,
    parse_part,
    parse_udh,
    split_sms,
    unpack_septets,
)

BASIC = GSM7_ALPHABET.replace("\x1b", "")
EXTENDED = "".join(GSM7_EXTENSION.values())

# -- alphabet ------------------------------------------------------------------------------------------


def test_alphabet_has_128_entries_and_no_duplicates() -> None:
    assert len(GSM7_ALPHABET) == 128
    assert len(set(BASIC)) == 127
    assert not set(BASIC) & set(EXTENDED)


def test_full_alphabet_round_trip() -> None:
    septets = encode_gsm7(BASIC)
    assert list(septets) == [code for code in range(128) if code != 0x1B]
    assert decode_gsm7(septets) == BASIC


def test_extension_table_round_trip() -> None:
    septets = encode_gsm7(EXTENDED)
    assert len(septets) == 2 * len(EXTENDED)
    assert list(septets[::2]) == [0x1B] * len(EXTENDED)
    assert list(septets[1::2]) == list(GSM7_EXTENSION)
    assert decode_gsm7(septets) == EXTENDED
    assert encode_gsm7("€") == b"\x1b\x65"
    assert encode_gsm7("{[~]}") == b"\x1b\x28\x1b\x3c\x1b\x3d\x1b\x3e\x1b\x29"


def test_specific_code_points() -> None:
    assert encode_gsm7("@£$¥") == b"\x00\x01\x02\x03"
    assert encode_gsm7("\u0394_\u03a9") == b"\x10\x11\x15"  # Greek capitals, not the Ohm sign
    assert encode_gsm7("¤¡§¿à") == b"\x24\x40\x5f\x60\x7f"
    assert not gsm7_encodable("\u2126")  # OHM SIGN is not GREEK CAPITAL LETTER OMEGA


def test_encodable() -> None:
    assert gsm7_encodable("Hello, World! 10€ [ok] {x} ^ | \\ ~")
    assert gsm7_encodable("")
    assert not gsm7_encodable("naïve")  # ï is not in the default alphabet
    assert not gsm7_encodable("don’t")  # typographic apostrophe
    assert not gsm7_encodable("\x1b")  # the escape is not a character


def test_encode_refuses_other_characters() -> None:
    with pytest.raises(ValueError, match=r"U\+00EF.*at 2"):
        encode_gsm7("naïve")


def test_decode_unknown_extension_and_lone_escape() -> None:
    # TS 23.038 §6.2.1.1: an undefined extension code shows the default alphabet character
    assert decode_gsm7([0x1B, 0x41]) == "A"
    assert decode_gsm7([0x1B, 0x1B, 0x41]) == " A"  # reserved further table: a space
    assert decode_gsm7([0x41, 0x1B]) == "A "  # escape at the end
    with pytest.raises(ValueError, match="out of range"):
        decode_gsm7([0x80])


# -- packing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "packed"),
    [
        ("hellohello", "E8329BFD4697D9EC37"),
        ("Hello", "C8329BFD06"),
        ("How are you?", "C8F71D14969741F977FD07"),
        ("", ""),
    ],
)
def test_packing_vectors(text: str, packed: str) -> None:
    septets = encode_gsm7(text)
    assert pack_septets(septets).hex().upper() == packed
    assert unpack_septets(bytes.fromhex(packed), len(septets)) == list(septets)


def test_eight_septets_fill_seven_octets() -> None:
    packed = pack_septets([0x7F] * 8)
    assert packed == b"\xff" * 7
    assert unpack_septets(packed, 8) == [0x7F] * 8


def test_fill_bits_shift_the_first_septet() -> None:
    assert pack_septets([0x41], fill_bits=1) == b"\x82"
    assert pack_septets([0x7F, 0x01], fill_bits=6) == b"\xc0\x3f\x00"
    assert unpack_septets(b"\x82", 1, fill_bits=1) == [0x41]
    assert pack_septets([], fill_bits=3) == b""


def test_fill_bits_after_header() -> None:
    assert fill_bits_after(0) == 0
    assert fill_bits_after(6) == 1  # 8-bit concatenation header: 48 bits, next boundary at 49
    assert fill_bits_after(7) == 0  # 16-bit: 56 bits, exactly 8 septets
    assert [fill_bits_after(n) for n in range(1, 8)] == [6, 5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("fill", range(7))
def test_pack_unpack_round_trip(fill: int) -> None:
    rng = random.Random(23038 + fill)
    for count in range(0, 40):
        septets = [rng.randrange(128) for _ in range(count)]
        packed = pack_septets(septets, fill)
        assert len(packed) == ((fill + 7 * count + 7) // 8 if count else 0)
        assert unpack_septets(packed, count, fill) == septets


def test_pack_errors() -> None:
    with pytest.raises(ValueError, match="fill_bits"):
        pack_septets([1], fill_bits=7)
    with pytest.raises(ValueError, match="out of range"):
        pack_septets([128])
    with pytest.raises(SmsFormatError, match="need 2 octets"):
        unpack_septets(b"\x00", 2)


# -- encoding and splitting ----------------------------------------------------------------------------


def test_choose_encoding() -> None:
    assert choose_encoding("Meeting at 3pm, room [B]") == "gsm7"
    assert choose_encoding("Grüße aus München") == "gsm7"  # ü, ß, Ü are in the alphabet
    assert choose_encoding("Ça va? où êtes-vous") == "ucs2"  # ê is not
    assert choose_encoding("ok 👍") == "ucs2"


def test_single_gsm_part() -> None:
    text = "x" * 160
    (part,) = split_sms(text, 1)
    assert part.encoding == "gsm7"
    assert part.udh == b"" and not part.udhi
    assert part.payload == b"x" * 160 == encode_gsm7(text)
    assert part.data_coding == DCS_GSM7 == 0
    assert part.septets_or_octets == 160
    assert part.text == text
    assert len(part.packed()) == 140


def test_extension_characters_count_twice() -> None:
    assert len(split_sms("€" * 80, 1)) == 1
    assert len(split_sms("€" * 80 + "x", 1)) == 2


def test_161_gsm_chars_make_153_plus_8() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(161))
    parts = split_sms(text, 0x42)
    assert [len(p.body) for p in parts] == [153, 8]
    assert [p.text for p in parts] == [text[:153], text[153:]]
    assert [p.udh for p in parts] == [bytes.fromhex("0500034202") + bytes([n]) for n in (1, 2)]
    assert all(p.udhi and p.data_coding == DCS_GSM7 for p in parts)
    # TP-UDL: 7 septets of header (6 octets and 1 fill bit) and the text
    assert [p.septets_or_octets for p in parts] == [160, 15]
    first = parts[0].packed()
    assert len(first) == 140
    assert first[:6] == parts[0].udh
    assert unpack_septets(first[6:], 153, fill_bits=1) == list(parts[0].body)
    assert join_sms(parts) == text
    assert join_sms(parts[::-1]) == text


def test_16bit_reference_parts() -> None:
    text = "y" * 400
    parts = split_sms(text, 0x1234, ref16=True)
    assert [len(p.body) for p in parts] == [152, 152, 96]
    assert parts[0].udh == bytes.fromhex("06080412340301")
    assert parts[0].septets_or_octets == 160
    assert len(parts[0].packed()) == 140
    assert join_sms(parts) == text


def test_escape_pair_never_split() -> None:
    # 152 plain characters, then "€": it would need septets 153 and 154, so it starts part 2
    text = "a" * 152 + "€" + "b" * 20
    parts = split_sms(text, 9)
    assert parts[0].text == "a" * 152
    assert len(parts[0].body) == 152
    assert parts[0].body[-1] != 0x1B
    assert parts[1].body.startswith(b"\x1b\x65")
    assert join_sms(parts) == text


def test_exactly_full_part_with_escape() -> None:
    text = "a" * 151 + "€" + "b" * 10  # 153 septets: the pair just fits
    parts = split_sms(text, 9)
    assert parts[0].text == "a" * 151 + "€"
    assert len(parts[0].body) == 153


def test_ucs2_single_part() -> None:
    text = "Привет" * 11 + "abcd"  # 70 units
    (part,) = split_sms(text, 3)
    assert part.encoding == "ucs2"
    assert part.data_coding == DCS_UCS2 == 8
    assert part.payload == text.encode("utf-16-be")
    assert part.septets_or_octets == 140
    assert part.packed() == part.payload


def test_emoji_is_a_surrogate_pair() -> None:
    (part,) = split_sms("👍", 1)
    assert part.payload == bytes.fromhex("D83DDC4D")
    assert part.septets_or_octets == 4
    assert len(split_sms("👍" * 35, 1)) == 1
    assert len(split_sms("👍" * 35 + "a", 1)) == 2


def test_300_characters_with_emoji() -> None:
    rng = random.Random(2338)
    alphabet = "abcdefghij klmnö,.é"
    chars = [rng.choice(alphabet) for _ in range(300)]
    for position in (0, 66, 67, 133, 150, 299):
        chars[position] = "😀"
    text = "".join(chars)
    parts = split_sms(text, 200)
    assert all(p.encoding == "ucs2" for p in parts)
    assert len(parts) == 5  # 306 UTF-16 units, at most 67 per part
    for part in parts:
        assert len(part.body) <= 134
        assert part.body.decode("utf-16-be") == part.text  # no part starts or ends in half a pair
        first, last = int.from_bytes(part.body[:2], "big"), int.from_bytes(part.body[-2:], "big")
        assert not 0xDC00 <= first <= 0xDFFF
        assert not 0xD800 <= last <= 0xDBFF
    assert parts[0].text == text[:66]  # 67 units; the emoji at 66 would need units 68 and 69
    assert parts[1].text.startswith("😀")
    assert "".join(p.text for p in parts) == text
    assert join_sms(parts) == text
    assert join_sms(list(reversed(parts))) == text


def test_surrogate_pair_at_the_boundary() -> None:
    text = "a" * 66 + "😀" + "b" * 10  # the pair would take units 67 and 68
    parts = split_sms(text, 5)
    assert parts[0].text == "a" * 66
    assert parts[1].text.startswith("😀")
    assert join_sms(parts) == text


def test_lone_surrogate_becomes_replacement() -> None:
    (part,) = split_sms("a\ud800b", 1)
    assert part.payload == "a\ufffdb".encode("utf-16-be")


def test_empty_text_is_one_empty_part() -> None:
    (part,) = split_sms("", 0)
    assert part.payload == b"" and part.septets_or_octets == 0


def test_too_long() -> None:
    assert len(split_sms("z" * 153 * 3, 1, max_parts=3)) == 3
    with pytest.raises(SmsTooLong, match=r"460 characters need 4 GSM 7-bit messages, at most 3") as info:
        split_sms("z" * 460, 1, max_parts=3)
    assert isinstance(info.value, ValueError)
    assert "too long" in info.value.reason
    with pytest.raises(SmsTooLong, match="Unicode"):
        split_sms("ж" * 71, 1, max_parts=1)
    with pytest.raises(SmsTooLong):
        split_sms("z" * (153 * 255 + 1), 1)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="reference"):
        split_sms("x", 256)
    with pytest.raises(ValueError, match="reference"):
        split_sms("x", 65536, ref16=True)
    with pytest.raises(ValueError, match="max_parts"):
        split_sms("x", 1, max_parts=0)


# -- user data header ----------------------------------------------------------------------------------


def test_build_and_parse_udh() -> None:
    udh = build_udh([(IEI_CONCAT_8BIT, b"\x07\x03\x01")])
    assert udh == bytes.fromhex("050003070301")
    ies, rest = parse_udh(udh + b"hello")
    assert ies == [(IEI_CONCAT_8BIT, b"\x07\x03\x01")]
    assert rest == b"hello"
    two = build_udh([(IEI_CONCAT_16BIT, b"\x12\x34\x02\x01"), (0x24, b"\x01")])  # and a language shift
    assert two == bytes.fromhex("09080412340201240101")
    assert parse_udh(two) == ([(IEI_CONCAT_16BIT, b"\x12\x34\x02\x01"), (0x24, b"\x01")], b"")
    assert build_udh([]) == b""


@pytest.mark.parametrize("data", ["", "05000307", "0300050102", "0100"])
def test_parse_udh_errors(data: str) -> None:
    with pytest.raises(SmsFormatError):
        parse_udh(bytes.fromhex(data))


# -- received parts ------------------------------------------------------------------------------------


def test_parse_part_smpp_unpacked() -> None:
    part = parse_part(bytes.fromhex("050003AA0201") + encode_gsm7("Hi [there]"), 0, udhi=True)
    assert part.encoding == "gsm7"
    assert part.udh == bytes.fromhex("050003AA0201")
    assert part.text == "Hi [there]"


def test_parse_part_packed_pdu_round_trip() -> None:
    parts = split_sms("The quick brown fox jumps over the lazy dog. " * 5, 17)
    again = [
        parse_part(p.packed(), p.data_coding, udhi=p.udhi, packed=True, udl=p.septets_or_octets)
        for p in parts
    ]
    assert again == parts
    single = split_sms("hellohello", 0)[0]
    assert parse_part(single.packed(), 0, packed=True, udl=10).text == "hellohello"


def test_parse_part_ucs2_and_dcs_groups() -> None:
    assert parse_part("ok 👍".encode("utf-16-be"), 0x08).text == "ok 👍"
    assert parse_part(encode_gsm7("flash"), 0x10).text == "flash"  # class 0
    assert parse_part(encode_gsm7("x"), 0xF0).text == "x"
    assert parse_part("ж".encode("utf-16-be"), 0x48).text == "ж"  # automatic deletion group
    assert parse_part("ж".encode("utf-16-be"), 0xE0).text == "ж"
    for dcs in (0x04, 0xF4, 0x24, 0x80):
        with pytest.raises(SmsFormatError):
            parse_part(b"\x00", dcs)
    with pytest.raises(SmsFormatError, match="UTF-16"):
        parse_part(b"\x00\x41\x00", 0x08)
    with pytest.raises(SmsFormatError, match="out of range"):
        parse_part(b"\xc1", 0)


def test_join_across_a_split_surrogate_pair() -> None:
    """A sender that cuts an emoji in half: the halves join again."""
    data = "a😀b".encode("utf-16-be")
    udh = [build_udh([(IEI_CONCAT_8BIT, bytes((1, 2, seq)))]) for seq in (1, 2)]
    parts = [parse_part(udh[0] + data[:4], 8, udhi=True), parse_part(udh[1] + data[4:], 8, udhi=True)]
    assert join_sms(parts) == "a😀b"


def test_join_errors() -> None:
    parts = split_sms("q" * 400, 3)
    with pytest.raises(SmsFormatError, match=r"parts \[2\] of 3 are missing"):
        join_sms([parts[0], parts[2]])
    other = split_sms("r" * 400, 4)
    with pytest.raises(SmsFormatError, match="different messages"):
        join_sms([parts[0], other[1], parts[2]])
    with pytest.raises(SmsFormatError, match="no parts"):
        join_sms([])
    plain = SmsPart("gsm7", b"", b"abc", 0, 3, "abc")
    with pytest.raises(SmsFormatError, match="no concatenation header"):
        join_sms([plain, parts[0]])
    assert join_sms([plain]) == "abc"
    assert join_sms([*parts, parts[1]]) == "q" * 400  # a duplicate is ignored

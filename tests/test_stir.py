"""STIR/SHAKEN verification (RFC 8224, 8225, 8588, 8226), sans-IO: one positive and one
negative case per check, each negative naming the check and its SIP code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from ripp_cli._sti import sign_passport
from ripp_core import NameAddr
from ripp_core._stir import (
    BadIdentityInfo,
    InvalidIdentityHeader,
    StirError,
    StirPolicy,
    UnsupportedCredential,
    inspect_identity,
    tn_auth_list,
    tn_of_uri,
    verify_identity,
)
from tests.auth_pki import FROM, NOW, TO, X5U, StiPki, identity, sti_pki, unsigned

PKI = sti_pki()
POLICY = StirPolicy()


def verify(value: str, pki: StiPki = PKI, *, anchors: list | None = None,  # type: ignore[type-arg]
           chain: bytes | None = None, policy: StirPolicy = POLICY, now: float = NOW,
           to: NameAddr = TO, from_: NameAddr = FROM):  # type: ignore[no-untyped-def]
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return chain if chain is not None else pki.chain_pem()

    result = verify_identity(
        value, to, from_, fetch, anchors if anchors is not None else [pki.ca], policy, now
    )
    assert fetched == [X5U]
    return result


def refused(value: str, kind: type[StirError], check: str, code: int, **kw) -> StirError:  # type: ignore[no-untyped-def]
    with pytest.raises(kind) as info:
        verify(value, **kw)
    assert info.value.check == check, info.value.message
    assert info.value.sip_code == code
    return info.value


def test_valid_passport_verifies() -> None:
    check = verify(identity(PKI, attest="B", origid="o-1"))
    assert check.verified
    assert check.attestation == "B"
    assert check.orig == "14085551234"
    assert check.dest == ("12125551234",)
    assert check.origid == "o-1"
    assert check.sip_code is None
    assert "TN range 14085550000+10000" in check.reason


# -- 1. identity_header / identity_info / identity_alg / identity_ppt
def test_header_not_a_jws() -> None:
    refused("garbage;info=<https://x/>", InvalidIdentityHeader, "identity_header", 438)


def test_header_without_info() -> None:
    value = identity(PKI).split(";")[0] + ";alg=ES256;ppt=shaken"
    refused(value, BadIdentityInfo, "identity_info", 436)


def test_info_must_be_https() -> None:
    value = identity(PKI).replace(f"info=<{X5U}>", "info=<http://certs.example/sti.pem>")
    refused(value, BadIdentityInfo, "identity_info", 436)


def test_header_alg_param_other_than_es256() -> None:
    refused(identity(PKI).replace("alg=ES256", "alg=RS256"), UnsupportedCredential,
            "identity_alg", 437)


def test_header_ppt_param_other_than_shaken() -> None:
    refused(identity(PKI).replace("ppt=shaken", "ppt=div"), UnsupportedCredential,
            "identity_ppt", 437)


# -- 2. passport_header
def _forge(header: dict, claims: dict | None = None) -> str:  # type: ignore[type-arg]
    payload = claims or {"attest": "A", "orig": {"tn": "14085551234"},
                         "dest": {"tn": ["12125551234"]}, "iat": int(NOW), "origid": "x"}
    return unsigned(header, payload, b"sig") + f";info=<{X5U}>;alg=ES256;ppt=shaken"


def test_passport_typ() -> None:
    value = _forge({"alg": "ES256", "typ": "JWT", "ppt": "shaken", "x5u": X5U})
    refused(value, InvalidIdentityHeader, "passport_header", 438)


def test_passport_alg_none() -> None:
    value = _forge({"alg": "none", "typ": "passport", "ppt": "shaken", "x5u": X5U})
    refused(value, UnsupportedCredential, "passport_alg", 437)


def test_passport_hs256() -> None:
    token = jwt.encode({"attest": "A"}, "secret-secret-secret-secret-32by", algorithm="HS256",
                       headers={"typ": "passport", "ppt": "shaken", "x5u": X5U})
    refused(f"{token};info=<{X5U}>;alg=ES256;ppt=shaken", UnsupportedCredential,
            "passport_alg", 437)


def test_passport_ppt() -> None:
    value = _forge({"alg": "ES256", "typ": "passport", "ppt": "div", "x5u": X5U})
    refused(value, UnsupportedCredential, "passport_ppt", 437)


def test_x5u_must_equal_info() -> None:
    value = identity(PKI, x5u="https://elsewhere.example/c.pem").replace(
        "info=<https://elsewhere.example/c.pem>", f"info=<{X5U}>"
    )
    refused(value, BadIdentityInfo, "passport_x5u", 436)


# -- 3. passport_claims
@pytest.mark.parametrize("attest", ["D", None])
def test_claims_attest(attest: str | None) -> None:
    value = _forge({"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": X5U},
                   {"attest": attest, "orig": {"tn": "1"}, "dest": {"tn": ["2"]}, "iat": 1,
                    "origid": "x"})
    refused(value, InvalidIdentityHeader, "passport_claims", 438)


def test_claims_dest_missing() -> None:
    value = _forge({"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": X5U},
                   {"attest": "A", "orig": {"tn": "1"}, "iat": 1, "origid": "x"})
    refused(value, InvalidIdentityHeader, "passport_claims", 438)


# -- 4. passport_iat
def test_iat_within_freshness_passes() -> None:
    assert verify(identity(PKI, iat=NOW - 59)).verified


@pytest.mark.parametrize("offset", [-61, 61])
def test_stale_or_future_iat(offset: float) -> None:
    refused(identity(PKI, iat=NOW + offset), InvalidIdentityHeader, "passport_iat", 438)


# -- 5. passport_orig / 6. passport_dest
def test_orig_must_match_from() -> None:
    refused(identity(PKI, from_="tel:+14085550000"), InvalidIdentityHeader, "passport_orig", 438)


def test_wrong_dest() -> None:
    refused(identity(PKI, to="tel:+19999999999"), InvalidIdentityHeader, "passport_dest", 438)


def test_sip_uri_with_number_matches() -> None:
    check = verify(identity(PKI), to=NameAddr(uri="sip:+1-212-555-1234@example.com"),
                   from_=NameAddr(uri="sip:14085551234@example.com;user=phone"))
    assert check.verified


# -- 7. x5u_content
def test_chain_not_pem() -> None:
    refused(identity(PKI), BadIdentityInfo, "x5u_content", 436, chain=b"<html>hello</html>")


# -- 8. certificate_trust
def test_untrusted_certificate() -> None:
    other = sti_pki()
    refused(identity(PKI), UnsupportedCredential, "certificate_trust", 437, anchors=[other.ca])


def test_expired_certificate() -> None:
    when = datetime.fromtimestamp(NOW, UTC)
    pki = sti_pki(not_before=when - timedelta(days=30), not_after=when - timedelta(days=1))
    refused(identity(pki), UnsupportedCredential, "certificate_trust", 437, pki=pki)


def test_critical_tn_auth_list_is_refused() -> None:
    pki = sti_pki(critical_tn_auth_list=True)
    refused(identity(pki), UnsupportedCredential, "certificate_trust", 437, pki=pki)


def test_no_anchors() -> None:
    refused(identity(PKI), UnsupportedCredential, "certificate_trust", 437, anchors=[])


# -- 9. passport_signature
def test_bad_signature() -> None:
    impostor = sti_pki()  # signs with another key, points at PKI's certificate
    refused(identity(impostor), InvalidIdentityHeader, "passport_signature", 438)


def test_tampered_claims() -> None:
    value = identity(PKI)
    token, _, params = value.partition(";")
    head, payload, sig = token.split(".")
    other = identity(PKI, attest="C").split(";")[0].split(".")[1]
    refused(f"{head}.{other}.{sig};{params}" if other != payload else value + "x",
            InvalidIdentityHeader, "passport_signature", 438)


# -- 10. tn_authorized
def test_number_covered_by_tn_and_range() -> None:
    by_tn = sti_pki(spc=None, tns=["14085551234"], ranges=())
    assert "TN 14085551234" in verify(identity(by_tn), by_tn).reason
    by_range = sti_pki(spc=None, ranges=[("14085551200", 100)])
    assert "range" in verify(identity(by_range), by_range).reason


def test_number_not_covered() -> None:
    pki = sti_pki(spc=None, tns=["14085550000"], ranges=[("14085551235", 10)])
    refused(identity(pki), InvalidIdentityHeader, "tn_authorized", 438, pki=pki)


def test_spc_covers_only_when_allowed() -> None:
    pki = sti_pki(spc="1234", ranges=())
    assert verify(identity(pki), pki).verified
    refused(identity(pki), InvalidIdentityHeader, "tn_authorized", 438, pki=pki,
            policy=StirPolicy(accept_spc=False))


def test_tn_auth_list_round_trip() -> None:
    pki = sti_pki(spc="ABCD", tns=["15551230000"], ranges=[("15551230001", 5)])
    assert sorted(tn_auth_list(pki.cert)) == sorted(
        [("spc", "ABCD", 0), ("tn", "15551230000", 1), ("range", "15551230001", 5)]
    )


# -- properties
@given(st.text(max_size=400))
def test_any_header_value_fails_with_a_typed_error(value: str) -> None:
    with pytest.raises(StirError):
        inspect_identity(value, TO, FROM, POLICY, NOW)


@given(st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True))
def test_tel_and_sip_numbers_agree(number: str) -> None:
    digits = number.lstrip("+")
    assert tn_of_uri(f"tel:{number}") == digits
    assert tn_of_uri(f"<sip:+{digits}@host>") == digits


@given(st.sampled_from("ABC"), st.from_regex(r"[0-9]{10,12}", fullmatch=True))
def test_signed_passports_inspect_back(attest: str, number: str) -> None:
    value = sign_passport(PKI.key, X5U, to=TO.uri, from_=f"tel:+{number}", iat=int(NOW),
                          attest=attest)
    passport = inspect_identity(value, TO, NameAddr(uri=f"tel:+{number}"), POLICY, NOW)
    assert (passport.attest, passport.orig, passport.x5u) == (attest, number, X5U)


@given(
    st.one_of(st.none(), st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True)),
    st.lists(st.from_regex(r"[0-9]{6,15}", fullmatch=True), max_size=3),
    st.lists(st.tuples(st.from_regex(r"[0-9]{6,15}", fullmatch=True),
                       st.integers(2, 10**6)), max_size=3),
)
def test_tn_auth_list_encodes_and_decodes(spc: str | None, tns: list[str],
                                          ranges: list[tuple[str, int]]) -> None:
    from cryptography.hazmat.primitives import hashes

    from ripp_cli._sti import tn_auth_list_der
    from ripp_core._stir import TN_AUTH_LIST_OID

    if spc is None and not tns and not ranges:
        tns = ["15550001111"]
    builder = (
        x509.CertificateBuilder()
        .subject_name(PKI.cert.subject).issuer_name(PKI.ca.subject)
        .public_key(PKI.key.public_key()).serial_number(1)
        .not_valid_before(PKI.cert.not_valid_before_utc)
        .not_valid_after(PKI.cert.not_valid_after_utc)
        .add_extension(x509.UnrecognizedExtension(
            TN_AUTH_LIST_OID, tn_auth_list_der(spc, tns, ranges)), critical=False)
    )
    cert = builder.sign(PKI.ca_key, hashes.SHA256())
    expected = ([("spc", spc, 0)] if spc is not None else []) + [
        ("range", start, count) for start, count in ranges
    ] + [("tn", number, 1) for number in tns]
    assert tn_auth_list(cert) == expected

"""Access-token checks (RFC 9068, RFC 6750) and the JWKS cache machine, sans-IO."""

from __future__ import annotations

import json

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripp_core._oauth import (
    JWKS_TRANSITIONS,
    InsufficientScope,
    InvalidToken,
    JwksCache,
    JwksInput,
    JwksPolicy,
    JwksState,
    TokenPolicy,
    parse_jwks,
    verify_access_token,
)
from tests.auth_pki import (
    AUDIENCE,
    ISSUER,
    NOW,
    IssuerKey,
    claims,
    issuer_key,
    jwks,
    token,
    unsigned,
)

POLICY = TokenPolicy(issuer=ISSUER, audience=AUDIENCE)
KEYS = {alg: issuer_key(alg, kid=f"kid-{alg}") for alg in ("ES256", "RS256", "EdDSA")}
ES = KEYS["ES256"]


def lookup(*keys: IssuerKey):  # type: ignore[no-untyped-def]
    table = parse_jwks(jwks(*keys))
    return lambda kid: table.get(kid)


def verify(tok: str, *keys: IssuerKey, creates_call: bool = True, now: float = NOW) -> str:
    grant = verify_access_token(
        tok, lookup(*(keys or tuple(KEYS.values()))), POLICY, now, creates_call=creates_call
    )
    return grant.principal


def refused(tok: str, check: str, *keys: IssuerKey, now: float = NOW) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        verify(tok, *keys, now=now)
    assert info.value.check == check, info.value.message
    assert info.value.http_status == 401
    assert info.value.challenge is not None
    assert 'error="invalid_token"' in info.value.challenge
    return info.value


# ---------------------------------------------------------------- positive cases
@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_valid_token_of_each_algorithm(alg: str) -> None:
    assert verify(token(KEYS[alg])) == "alice"


def test_principal_falls_back_to_client_id() -> None:
    assert verify(token(ES, claims(sub=None))) == "alice-app"


def test_aud_may_be_a_list_and_typ_the_media_type() -> None:
    tok = token(ES, claims(aud=["other", AUDIENCE]), typ="application/at+jwt")
    assert verify(tok) == "alice"


def test_clock_skew_is_tolerated_within_bounds() -> None:
    assert verify(token(ES, claims(exp=int(NOW) - 30))) == "alice"  # 60 s skew
    assert verify(token(ES, claims(nbf=int(NOW) + 30))) == "alice"


def test_scope_is_needed_only_to_create_calls() -> None:
    tok = token(ES, claims(scope="read"))
    assert verify(tok, creates_call=False) == "alice"
    with pytest.raises(InsufficientScope) as info:
        verify(tok, creates_call=True)
    assert info.value.http_status == 403
    assert info.value.challenge == (
        'Bearer realm="ripp", error="insufficient_scope", scope="ripp:call"'
    )


# ---------------------------------------------------------------- one negative per check
def test_oversized_token() -> None:
    refused("a" * 9000, "token_size")


def test_not_a_jws() -> None:
    refused("not.a-token", "token_header")


def test_wrong_typ() -> None:
    refused(token(ES, typ="JWT"), "token_type")


def test_alg_none_is_refused() -> None:
    tok = unsigned({"alg": "none", "typ": "at+jwt", "kid": ES.kid}, claims())
    refused(tok, "token_algorithm")


def test_hs256_with_the_public_key_as_secret_is_refused() -> None:
    # The classic confusion attack: HMAC keyed with the (public) JWK bytes.
    secret = jwt.utils.base64url_encode(str(ES.jwk()).encode())
    tok = jwt.encode(claims(), secret, algorithm="HS256", headers={"typ": "at+jwt", "kid": ES.kid})
    refused(tok, "token_algorithm")


def test_unknown_kid() -> None:
    refused(token(issuer_key("ES256", kid="elsewhere")), "token_key")


def test_key_type_must_fit_the_algorithm() -> None:
    rsa_key = KEYS["RS256"]
    # An ES256 token naming an RSA key's kid.
    tok = token(IssuerKey(ES.key, rsa_key.kid, "ES256"))
    refused(tok, "token_key")


def test_bad_signature() -> None:
    impostor = issuer_key("ES256", kid=ES.kid)  # same kid, different key
    refused(token(impostor), "token_signature", ES)


def test_wrong_issuer() -> None:
    refused(token(ES, claims(iss="https://evil.example")), "token_issuer")


def test_wrong_audience() -> None:
    refused(token(ES, claims(aud="https://other.example")), "token_audience")


def test_expired_token() -> None:
    refused(token(ES, claims(exp=int(NOW) - 61)), "token_times")


def test_missing_exp() -> None:
    refused(token(ES, claims(exp=None)), "token_times")


def test_not_yet_valid() -> None:
    refused(token(ES, claims(nbf=int(NOW) + 120)), "token_times")


def test_no_subject() -> None:
    refused(token(ES, claims(sub=None, client_id=None)), "token_subject")


def test_policy_refuses_hmac_algorithms() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        TokenPolicy(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",))


@given(st.text(max_size=300))
def test_any_string_is_refused_with_a_typed_error(text: str) -> None:
    with pytest.raises(InvalidToken):
        verify(text)


# ---------------------------------------------------------------- the key set
def test_jwks_drops_symmetric_keys() -> None:
    document = jwks(ES)
    document["keys"].append({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"})
    assert list(parse_jwks(document)) == [ES.kid]


def test_jwks_rejects_non_documents() -> None:
    for bad in (b"[]", b"{", b'{"keys": 3}'):
        with pytest.raises(ValueError):
            parse_jwks(bad)


def test_transition_table_is_complete() -> None:
    assert set(JWKS_TRANSITIONS) == {(s, i) for s in JwksState for i in JwksInput}


def test_cache_lifecycle() -> None:
    cache = JwksCache(JwksPolicy(max_age=100, min_refresh_interval=10))
    assert cache.wants_refresh(0)
    cache.fetching(0)
    assert not cache.wants_refresh(5)  # rate bound even while empty
    cache.loaded(json.dumps(jwks(ES)), 1)
    assert cache.state is JwksState.FRESH and not cache.wants_refresh(2)
    assert cache.lookup(ES.kid, 3) is not None
    assert cache.lookup(None, 3) is not None  # the only key
    assert cache.lookup("rotated", 4) is None
    assert cache.state is JwksState.STALE
    assert not cache.wants_refresh(5)  # within min_refresh_interval of the load
    assert cache.wants_refresh(11)
    cache.failed(11)
    assert cache.lookup(ES.kid, 12) is not None  # old keys survive a failed fetch
    assert not cache.wants_refresh(15)
    cache.loaded(json.dumps(jwks(ES)), 30)
    assert not cache.wants_refresh(129)
    assert cache.wants_refresh(131)  # aged out


def test_bad_document_counts_as_failure() -> None:
    cache = JwksCache()
    with pytest.raises(ValueError):
        cache.loaded(b"nonsense", 0)
    assert cache.state is JwksState.EMPTY


@given(st.lists(st.tuples(st.sampled_from(["lookup", "want", "load", "fail"]),
                          st.floats(0, 5)), max_size=40))
def test_cache_never_refreshes_faster_than_the_bound(steps: list[tuple[str, float]]) -> None:
    cache = JwksCache(JwksPolicy(max_age=50, min_refresh_interval=10))
    now = 0.0
    last_attempt: float | None = None
    document = json.dumps(jwks(ES))
    for action, delta in steps:
        now += delta
        if action == "lookup":
            cache.lookup("unknown", now)
        elif action == "want":
            if cache.wants_refresh(now):
                assert last_attempt is None or now - last_attempt >= 10
                cache.fetching(now)
                last_attempt = now
        elif action == "load" and last_attempt is not None:
            cache.loaded(document, now)
            last_attempt = now
        elif action == "fail" and last_attempt is not None:
            cache.failed(now)
            last_attempt = now

"""End to end: a default ``ripp serve`` takes only authenticated calls (R13, R14).

``ripp serve`` and ``ripp call`` run as subprocesses with a fresh ripp home; the default
call (local issuer token, PASSporT signed by the local STI certificate and published on the
caller's own HTTPS x5u server) gets through; a bad token, a token without the call scope,
an untrusted or stale PASSporT are refused with their documented status; the named
``--insecure-*`` and ``--identity-policy mark`` options relax exactly what they say. JWKS
and token endpoints are served by a local HTTPS server inside the test.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from ripp_cli._certs import ensure_local_pki
from ripp_cli._https import Document, HttpsServer
from ripp_cli._issuer import ensure_local_issuer
from ripp_cli._sti import ensure_local_sti, sign_passport
from tests.auth_pki import sti_pki
from tests.test_cli import REPO, _command, _env, serving

pytestmark = pytest.mark.slow
TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"


def call(home: Path, uri: str, *args: str) -> tuple[int, dict[str, Any], str]:
    """``ripp call URI --json ARGS``: exit status, the JSON report, stderr."""
    done = subprocess.run(
        _command("call", uri, "--json", "--seconds", "0.3", "--to", TO, "--from", FROM, *args),
        cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=40,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return done.returncode, json.loads(lines[-1]), done.stderr


def mint(home: Path, *args: str) -> str:
    """``ripp token ARGS`` (run as a subprocess)."""
    done = subprocess.run(_command("token", *args), cwd=REPO, env=_env(home),
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def mint_here(home: Path, **options: Any) -> str:
    """What ``ripp token`` prints, minted in this process (faster)."""
    return ensure_local_issuer(home).mint(time.time(), **options)


def tls_server(home: Path, documents: dict[str, Document] | None = None) -> HttpsServer:
    """An HTTPS server with the home's local TLS certificate (which ripp trusts)."""
    return HttpsServer(home / "server.pem", home / "server-key.pem", documents)


@pytest.mark.timeout(120)
def test_default_serve_accepts_only_authenticated_calls(tmp_path: Path) -> None:
    with serving(tmp_path) as (server, uri):
        status, result, _ = call(tmp_path, uri)
        assert status == 0 and result["ended"]["code"] == 200, result

        status, result, _ = call(tmp_path, uri, "--token", "not-a-token")
        assert status == 1
        assert result["ended"]["code"] == 401 and "token_header" in result["ended"]["reason"]

        status, result, _ = call(tmp_path, uri, "--token", mint_here(tmp_path, scope="read"))
        assert (status, result["ended"]["code"]) == (1, 403)

        status, result, _ = call(tmp_path, uri, "--token", mint_here(tmp_path, audience="x"))
        assert result["ended"]["code"] == 401 and "token_audience" in result["ended"]["reason"]

        # A PASSporT from an STI-CA the server does not trust, served over real HTTPS.
        stranger = sti_pki(at=time.time())
        with tls_server(tmp_path, {"/c.pem": Document(stranger.chain_pem())}) as certs:
            x5u = certs.url("/c.pem")
            value = sign_passport(stranger.key, x5u, to=TO, from_=FROM, iat=int(time.time()))
            status, result, _ = call(tmp_path, uri, "--identity", value)
            assert result["ended"]["code"] == 437, result
            assert "certificate_trust" in result["ended"]["reason"]

            # The local STI key but a stale iat, and one naming another destination.
            sti = ensure_local_sti(tmp_path)
            certs.documents["/sti.pem"] = Document(sti.cert_path.read_bytes())
            local = certs.url("/sti.pem")
            stale = sign_passport(sti.signing_key(), local, to=TO, from_=FROM,
                                  iat=int(time.time()) - 300)
            status, result, _ = call(tmp_path, uri, "--identity", stale)
            refused = result["ended"]
            assert refused["code"] == 438 and "passport_iat" in refused["reason"]
            elsewhere = sign_passport(sti.signing_key(), local, to="tel:+15555550100",
                                      from_=FROM, iat=int(time.time()))
            status, result, _ = call(tmp_path, uri, "--identity", elsewhere)
            refused = result["ended"]
            assert refused["code"] == 438 and "passport_dest" in refused["reason"]
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert out.count("\ncall ") + out.startswith("call ") == 1, out  # only the good one


@pytest.mark.timeout(120)
def test_insecure_and_mark_options_relax_what_they_name(tmp_path: Path) -> None:
    stranger = sti_pki(at=time.time())
    ensure_local_pki(tmp_path)  # the TLS certificate of the x5u server below
    with tls_server(tmp_path, {"/c.pem": Document(stranger.chain_pem())}) as certs:
        value = sign_passport(stranger.key, certs.url("/c.pem"), to=TO, from_=FROM,
                              iat=int(time.time()))
        with serving(tmp_path, "--insecure-accept-any-token", "--identity-policy", "mark") as (
            server, uri
        ):
            status, result, _ = call(tmp_path, uri, "--token", "anything", "--identity", value)
            assert status == 0 and result["ended"]["code"] == 200, result
            server.terminate()
            server.communicate(timeout=10)
        with serving(tmp_path, "--insecure-accept-any-identity") as (server, uri):
            status, result, _ = call(tmp_path, uri, "--identity", value)
            assert status == 0, result
            status, result, _ = call(tmp_path, uri, "--token", "anything")
            assert result["ended"]["code"] == 401  # tokens are still checked
            server.terminate()
            server.communicate(timeout=10)


@pytest.mark.timeout(120)
def test_jwks_url_and_client_credentials(tmp_path: Path) -> None:
    ensure_local_issuer(tmp_path)
    jwks = (tmp_path / "issuer-jwks.json").read_bytes()
    ensure_local_pki(tmp_path)
    requests: list[bytes] = []

    def token_endpoint(path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        requests.append(body)
        # The authorization server of this test: mints with the local issuer key.
        token = mint_here(tmp_path, subject="svc", audience="urn:test")
        return 200, json.dumps(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        ).encode()

    with tls_server(tmp_path, {"/jwks": Document(jwks, "application/json")}) as idp:
        idp.post_handler = token_endpoint
        args = ("--jwks", idp.url("/jwks"), "--issuer", "urn:ripp:local-issuer",
                "--audience", "urn:test")
        with serving(tmp_path, *args) as (server, uri):
            status, result, stderr = call(
                tmp_path, uri, "--token-endpoint", idp.url("/token"),
                "--client-id", "svc", "--client-secret", "pw",
            )
            assert status == 0 and result["ended"]["code"] == 200, stderr
            # A token for the default audience is refused by this server.
            status, result, _ = call(tmp_path, uri)
            assert result["ended"]["code"] == 401
            server.terminate()
            server.communicate(timeout=10)
        assert idp.hits["/jwks"] == 1  # fetched once, then cached
    assert len(requests) == 1 and b"grant_type=client_credentials" in requests[0]


def test_token_command_prints_a_verifiable_token(tmp_path: Path) -> None:
    import jwt

    token = mint(tmp_path, "--subject", "carol", "--scope", "ripp:call extra")
    path = Path(mint(tmp_path, "--jwks"))
    keys = jwt.PyJWKSet.from_json(path.read_text())
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    claims = jwt.decode(token, keys[header["kid"]].key, algorithms=["ES256"],
                        audience="urn:ripp:local")
    assert (claims["sub"], claims["scope"], claims["iss"]) == (
        "carol", "ripp:call extra", "urn:ripp:local-issuer"
    )
    assert (tmp_path / "issuer-key.pem").stat().st_mode & 0o077 == 0
    key = serialization.load_pem_private_key((tmp_path / "issuer-key.pem").read_bytes(), None)
    assert key is not None

"""``ripp gateway``: bridge SIP + RTP calls and RIPP calls, both ways (docs/gateway.md).

SIP INVITEs arriving at ``--sip-host:--sip-port`` become RIPP calls to ``--calls-uri``;
RIPP calls arriving at the gateway's own RIPP server (``--ripp-port``) become INVITEs to
``--trunk``. Trio only (the gateway driver has no asyncio twin yet).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ripp_core import RippConfig

from . import _auth_cli, _certs
from ._heap import freeze_startup_heap
from ._runtime import TrioRuntime


def add_arguments(subcommands: Any) -> None:
    """Register ``ripp gateway``."""
    gateway = subcommands.add_parser(
        "gateway", help="bridge SIP/RTP and RIPP calls, both ways", description=__doc__)
    gateway.add_argument("--sip-host", default="127.0.0.1", help="SIP (and RTP) address")
    gateway.add_argument("--sip-port", type=int, default=5060,
                         help="SIP port, UDP and TCP (0: any)")
    gateway.add_argument("--rtp-host", help="RTP address written in SDP (default: --sip-host)")
    gateway.add_argument("--calls-uri", help="RIPP calls URI for calls from SIP (else 403)")
    gateway.add_argument(
        "--token", help="bearer token for --calls-uri (default: one of the local issuer)"
    )
    gateway.add_argument("--ca", type=Path, help="CA for --calls-uri (default: the local CA)")
    gateway.add_argument("--trunk", help="SIP URI for calls from RIPP, e.g. sip:10.0.0.5:5060")
    gateway.add_argument("--username", help="digest username for the trunk")
    gateway.add_argument("--password", help="digest password for the trunk")
    gateway.add_argument("--ripp-host", default="127.0.0.1", help="RIPP server address")
    gateway.add_argument("--ripp-port", type=int, default=4433, help="RIPP server port (0: any)")
    gateway.add_argument("--ptime", type=int, default=20, help="RTP packetisation (ms)")
    gateway.add_argument("--sign-identity", action="store_true",
                         help="sign a PASSporT for INVITEs without Identity (else 428)")
    gateway.add_argument("--no-jitter-buffer", action="store_true",
                         help="forward RIPP media on arrival instead of in playout order")
    gateway.add_argument("-v", "--verbose", action="store_true", help="log protocol events")
    # The gateway's RIPP server (calls from RIPP) checks tokens and PASSporTs as ripp serve.
    _auth_cli.add_serve_options(gateway)


def run(args: argparse.Namespace) -> int:
    """Run the gateway until Ctrl-C."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s %(message)s", stream=sys.stderr)
    if args.calls_uri is None and args.trunk is None:
        print("ripp gateway: give --calls-uri, --trunk or both", file=sys.stderr)
        return 2
    status = TrioRuntime().run_until_interrupted(lambda: _serve(args))
    return 130 if status is None else status


async def _serve(args: argparse.Namespace) -> int:  # runs until cancelled (Ctrl-C)
    import trio

    from ripp_sip import Credentials
    from ripp_sip.trio_gateway import GatewayConfig, open_gateway

    credentials = None
    if args.username is not None:
        credentials = Credentials(args.username, args.password or "")
    client_quic = server_quic = None
    if args.calls_uri is not None:
        host = urlsplit(args.calls_uri).hostname or "localhost"
        client_quic = (_certs.client_configuration_from_ca(args.ca, host) if args.ca
                       else _certs.client_configuration(_certs.ensure_local_pki(), host))
    pki = None
    checks: dict[str, Any] = {}
    if args.trunk is not None:
        pki = _certs.ensure_local_pki(hostnames=("localhost", args.ripp_host))
        server_quic = _certs.server_configuration(pki)
        checks = _auth_cli.server_checks(args)
    # As ripp call does: the local issuer's token (unless --token) and, with
    # --sign-identity, PASSporTs signed with the local STI certificate (x5u served here).
    async with _auth_cli.caller_auth(TrioRuntime(), args) as auth:
        config = GatewayConfig(
            sip_host=args.sip_host, sip_port=args.sip_port,
            rtp_host=args.rtp_host or args.sip_host, calls_uri=args.calls_uri,
            ripp_token=auth.token, trunk=args.trunk, credentials=credentials,
            ptime=args.ptime, sign_identity=auth.identity if args.sign_identity else None,
            jitter_buffer=not args.no_jitter_buffer, on_call_end=_report)
        async with open_gateway(config, client_quic_configuration=client_quic,
                                server_quic_configuration=server_quic,
                                ripp_host=args.ripp_host, ripp_port=args.ripp_port,
                                **checks) as gateway:
            host, port = gateway.sip_address
            line = f"ripp gateway: sip udp/{host}:{port} tcp/{host}:{port}"
            if args.calls_uri is not None:
                line += f" -> {args.calls_uri}"
            if gateway.ripp_address is not None and pki is not None:
                line += (f"; ripp https://localhost:{gateway.ripp_address[1]}"
                         f"{RippConfig().calls_path} -> {args.trunk}  CA {pki.ca_cert_path}")
            print(line, flush=True)
            freeze_startup_heap()  # started: as ripp serve does (_heap.py)
            await trio.sleep_forever()


def _report(record: Any) -> None:
    """One line per finished call, with the gateway's own per-packet figures."""
    from ._app import percentiles

    forward = percentiles(list(record.forward_latency), ("p50", "p99"))
    backward = percentiles(list(record.backward_latency), ("p50", "p99"))
    code, reason = record.ended or (0, "?")
    print(f"call {record.direction} ended {code} {reason}: "
          f"rtp in {record.rtp_in} out {record.rtp_out}, frames to ripp "
          f"{record.frames_to_ripp} from ripp {record.frames_from_ripp}, dtmf "
          f"{record.dtmf_to_ripp}/{record.dtmf_to_sip}; gateway ms rtp->ripp "
          f"p50={forward['p50']} p99={forward['p99']}, ripp->rtp "
          f"p50={backward['p50']} p99={backward['p99']}", flush=True)

"""OpenTelemetry traces of calls (ripp_cli.tracing), over real sockets: the client's
traceparent continues at the server, and a move shows as its own span."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import ripp_trio
from ripp_cli.local import client_tls, dev_identity, server_tls
from ripp_cli.tracing import CallTracer
from ripp_core import (
    CallEnded,
    CallState,
    Codec,
    insecure_accept_any_bearer,
    insecure_accept_any_identity,
)

TO, FROM = "<tel:+12125551234>", "<tel:+14085551234>"


@pytest.fixture(autouse=True)
def _ripp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPP_HOME", str(tmp_path / "pki"))


def server() -> Any:
    return ripp_trio.open_server(
        server_tls(),
        authorizer=insecure_accept_any_bearer,
        identity_verifier=insecure_accept_any_identity,
    )


def recorder() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(20):
            await main()

    trio.run(bounded)


def test_a_call_that_moves_is_one_trace_across_both_sides() -> None:
    exporter, provider = recorder()
    client_tracer = CallTracer(provider.get_tracer("client"))
    server_tracer = CallTracer(provider.get_tracer("server"))
    onward: list[tuple[tuple[str, str], ...]] = []

    async def main() -> None:
        async with server() as old, server() as new:
            old.observe(server_tracer)
            uri = f"https://localhost:{old.address[1]}/ripp/calls"

            async def answer() -> None:
                async for call in old.calls():
                    await call.answer()
                    onward.append(server_tracer.headers_for(call.handle))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                async with ripp_trio.open_client(client_tls(), calls_uris=[uri], token="t") as c:
                    c.observe(client_tracer)
                    call = await client_tracer.place_call(
                        c, to=TO, from_=FROM, identity=dev_identity(TO, FROM)
                    )
                    await call.wait_state(CallState.CONNECTED)
                    old.drain_to(new, f"localhost:{new.address[1]}")
                    for _ in range(20):  # media across the move
                        call.send_audio(Codec.PCMU, 0.02, bytes(160))
                        await trio.sleep(0.02)
                    await call.terminate()
                nursery.cancel_scope.cancel()

    run(main)
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    calls = by_name["ripp.call"]
    client = next(s for s in calls if s.kind is SpanKind.CLIENT)
    served = next(s for s in calls if s.kind is SpanKind.SERVER)
    assert client.context is not None and served.context is not None
    # The traceparent on the creation request made the server's span the client's child.
    assert served.context.trace_id == client.context.trace_id
    assert served.parent is not None and served.parent.span_id == client.context.span_id
    assert served.attributes is not None and "ripp.moved_to" in served.attributes
    children = {s.name for s in spans if s.parent and s.parent.span_id == client.context.span_id}
    assert {"ripp.create", "ripp.signaling", "ripp.move"} <= children
    assert client.attributes is not None and client.attributes["ripp.end.code"] == 200
    assert client.status.status_code is not StatusCode.ERROR
    # Passed on: the headers for the next hop name the server's call span, in this trace.
    (headers,) = onward
    traceparent = dict(headers)["traceparent"].split("-")
    assert traceparent[1] == format(client.context.trace_id, "032x")
    assert traceparent[2] == format(served.context.span_id, "016x")


def test_a_refused_call_is_an_error_span() -> None:
    exporter, provider = recorder()
    client_tracer = CallTracer(provider.get_tracer("client"))

    async def main() -> None:
        async with server() as srv:
            uri = f"https://localhost:{srv.address[1]}/ripp/calls"

            async def refuse() -> None:
                async for call in srv.calls():
                    await call.reject(603, "Decline")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(refuse)
                async with ripp_trio.open_client(client_tls(), calls_uris=[uri], token="t") as c:
                    c.observe(client_tracer)
                    call = await client_tracer.place_call(
                        c, to=TO, from_=FROM, identity=dev_identity(TO, FROM)
                    )
                    with pytest.raises(CallEnded):
                        await call.wait_state(CallState.CONNECTED)
                nursery.cancel_scope.cancel()

    run(main)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "ripp.call"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["ripp.end.code"] == 603

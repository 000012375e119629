"""ripp_asyncio: RIPP calls over real UDP sockets with asyncio.

A thin driver around :mod:`ripp_core`: sockets, timers and wake-ups only. The same API
shape exists for Trio in :mod:`ripp_trio`::

    async with open_server(server_config) as server:
        async for call in server.calls():
            await call.answer()

    async with open_client(client_config, calls_uris=[...], token="...") as client:
        call = await client.place_call(to="<tel:+12125551234>", from_="<tel:+14085551234>",
                                       identity=passport)
        await call.wait_state(CallState.CONNECTED)
"""

from ripp_core import CallEnded, CallMovedAway
from ripp_core.aio import Call, Client, Server, ServerCall

from ._api import open_client, open_server
from ._tcp import client_ssl_context, open_h2_client, open_h2_server, server_ssl_context

__all__ = [
    "Call",
    "CallEnded",
    "CallMovedAway",
    "Client",
    "Server",
    "ServerCall",
    "client_ssl_context",
    "open_client",
    "open_h2_client",
    "open_h2_server",
    "open_server",
    "server_ssl_context",
]

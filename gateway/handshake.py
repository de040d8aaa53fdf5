"""uvicorn's WebSocket protocol (websockets-sansio), with one gap closed: a handshake that
websockets refuses while parsing it (a request line over 8 KiB: 414; header fields too large:
431) queues its answer in the protocol object, but uvicorn only writes answers for requests
that parsed, so the client waited with no reply until its own timeout."""

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            refusal = self.conn.data_to_send()
            if refusal:
                self.transport.write(b"".join(refusal))
            self.transport.close()

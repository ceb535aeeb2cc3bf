"""One newline-ended line from a socket, for the directed-connection test scripts."""


def line(sock):
    """Reads byte by byte up to and including a newline (or the end of the stream), so that
    nothing after the line is taken from the socket: the bytes that follow may belong to TLS."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return data
        data += chunk
    return data

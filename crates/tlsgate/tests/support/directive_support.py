"""What the directive test scripts share: libtlsgate through ctypes (the signatures of
crates/libtlsgate/include/tlsgate.h) and reading one line off a socket."""
import ctypes


class Peer(ctypes.Structure):
    """`struct tlsgate_peer`."""
    _fields_ = [(name, ctypes.c_char_p) for name in
                ("subject", "identity", "version", "suite", "alpn", "sni", "cert_pem")] + [
        ("sans", ctypes.POINTER(ctypes.c_char_p))]


class TlsOptions(ctypes.Structure):
    """`struct tlsgate_tls_options`."""
    _fields_ = [("size", ctypes.c_size_t), ("sni", ctypes.c_char_p),
                ("alpn", ctypes.POINTER(ctypes.c_char_p)), ("client_cert", ctypes.c_char_p)]


def tls_options(sni=None, alpn=(), client_cert=None):
    """A filled `tlsgate_tls_options`; `alpn` a list of bytes."""
    protocols = (ctypes.c_char_p * (len(alpn) + 1))(*alpn, None) if alpn else None
    options = TlsOptions(ctypes.sizeof(TlsOptions), sni,
                         ctypes.cast(protocols, ctypes.POINTER(ctypes.c_char_p)) if alpn else None,
                         client_cert)
    options._keep = protocols  # the array lives as long as the struct
    return options


def load(path):
    """The library at `path`, its functions typed."""
    lib = ctypes.CDLL(path)
    lib.tlsgate_peer.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.POINTER(Peer))]
    lib.tlsgate_peer_free.argtypes = [ctypes.POINTER(Peer)]
    lib.tlsgate_start_tls.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p]
    lib.tlsgate_start_tls_with.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.POINTER(TlsOptions)]
    lib.tlsgate_stop_tls.argtypes = [ctypes.c_int, ctypes.c_uint64]
    lib.tlsgate_last_error.restype = ctypes.c_char_p
    return lib


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

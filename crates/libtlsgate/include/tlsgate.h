/* libtlsgate: application directives to tlsgate's control socket (docs/directives.md).
 *
 * Each call names the connection by the addresses of `fd`, the application's own connected TCP
 * socket, and sends one request to the control socket named by the environment variable
 * TLSGATE_CONTROL (default /run/tlsgate/control.sock). Calls block until tlsgate answers.
 * Functions returning int return 0 on success and -1 on failure; tlsgate_last_error() then
 * says why (valid until the next call on the same thread). */
#ifndef TLSGATE_H
#define TLSGATE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The client's TLS session of a terminate connection. Strings are NUL-terminated UTF-8;
 * subject, identity and cert_pem are NULL without a client certificate, alpn and sni NULL when
 * the client sent none. sans is a NULL-terminated array ("DNS:…", "URI:…", "IP:…"). */
typedef struct tlsgate_peer {
    char *subject;
    char *identity;
    char *version;
    char *suite;
    char *alpn;
    char *sni;
    char *cert_pem;
    char **sans;
} tlsgate_peer;

/* Asks who the TLS client of the connection on `fd` is; *out is freed with tlsgate_peer_free. */
int tlsgate_peer(int fd, tlsgate_peer **out);
void tlsgate_peer_free(tlsgate_peer *peer);

/* TLS from byte `written` of what the application writes on `fd` (the bytes it has written so
 * far). `sni` and `alpn` (comma-separated) may be NULL. Returns once TLS is up. */
int tlsgate_start_tls(int fd, uint64_t written, const char *sni, const char *alpn);

/* Plaintext again from byte `written` on: returns once both close_notify alerts passed. */
int tlsgate_stop_tls(int fd, uint64_t written);

/* Why the last call on this thread failed. */
const char *tlsgate_last_error(void);

#ifdef __cplusplus
}
#endif

#endif

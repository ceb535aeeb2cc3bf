/* libtlsgate: application directives to tlsgate's control socket (docs/directives.md).
 *
 * Each call names the connection by the addresses of `fd`, the application's own connected TCP
 * socket, and sends one request to the control socket named by the environment variable
 * TLSGATE_CONTROL (default /run/tlsgate/control.sock). Calls block until tlsgate answers.
 * Functions returning int return 0 on success and -1 on failure; tlsgate_last_error() then
 * says why (valid until the next call on the same thread). */
#ifndef TLSGATE_H
#define TLSGATE_H

#include <stddef.h>
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

/* What a start_tls asks for beyond the listener's defaults. Set `size` to
 * sizeof(tlsgate_tls_options): fields are added only at the end, and tlsgate reads no further
 * than `size`. Every other field may be NULL (the listener's setting). */
typedef struct tlsgate_tls_options {
    size_t size;
    const char *sni;
    /* ALPN protocols offered, a NULL-terminated array. */
    const char *const *alpn;
    /* The name of one of the listener's `client_identities` (originate only); NULL: its
     * `cert`/`key`. An unknown name fails the call and closes the connection. */
    const char *client_cert;
} tlsgate_tls_options;

/* tlsgate_start_tls with options; `options` may be NULL. */
int tlsgate_start_tls_with(int fd, uint64_t written, const tlsgate_tls_options *options);

/* Plaintext again from byte `written` on: returns once both close_notify alerts passed. */
int tlsgate_stop_tls(int fd, uint64_t written);

/* Why the last call on this thread failed. */
const char *tlsgate_last_error(void);

#ifdef __cplusplus
}
#endif

#endif

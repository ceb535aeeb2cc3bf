/* A TCP relay that changes one byte of one TLS record on its way to the server: the last byte
 * (in the tag) of the first client record of at least 1024 bytes, which is application data.
 * Usage: tamper LISTEN_PORT SERVER_PORT (loopback, one connection). */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int sock_to(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(1); }
    return s;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0) { perror("listen"); return 1; }
    printf("tamper: listening\n");
    fflush(stdout);
    int c = accept(l, 0, 0), s = sock_to(atoi(argv[2]));
    unsigned char buf[65536], hdr[5];
    int have_hdr = 0, tampered = 0;
    long body_left = 0, rec_len = 0;
    struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = s, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) return 1;
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(s, buf, sizeof buf);
            if (n <= 0) break;
            if (write(c, buf, n) != n) break;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0) { shutdown(s, SHUT_WR); p[0].fd = -1; continue; }
            for (ssize_t i = 0; i < n; i++) {
                if (body_left == 0) {
                    hdr[have_hdr++] = buf[i];
                    if (have_hdr == 5) {
                        rec_len = body_left = (hdr[3] << 8) | hdr[4];
                        have_hdr = 0;
                    }
                } else if (--body_left == 0 && !tampered && rec_len >= 1024) {
                    buf[i] ^= 0x01;
                    tampered = 1;
                    printf("tamper: changed the last byte of a %ld-byte record\n", rec_len);
                    fflush(stdout);
                }
            }
            if (write(s, buf, n) != n) break;
        }
    }
    return 0;
}

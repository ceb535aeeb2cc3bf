// SPDX-License-Identifier: Apache-2.0
//
// The connect gate's kernel splice: after the downgrade, the two TCP connections the gate
// holds (portal -> gate, gate -> destination) become one. Each segment arriving on either is
// rewritten here, at tc ingress, into a segment of the other — addresses, ports, sequence and
// acknowledgement numbers, window, timestamps, SACK blocks — and sent out of the other
// connection's interface, so the gate's sockets and its process never see it again.
//
// A connection is two *legs*, keyed by the segment as it arrives (source, destination, ports).
// User space (`mod.rs`) creates them, fills in the offsets it read from its own sockets and
// moves them through WATCH -> FREEZE/SPLICE. Only helpers that are not GPL-only are used (the
// program is Apache-2.0 like the rest of tlsgate). Built with `build.sh` beside this file.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The legacy map definition aya reads from the `maps` section (no BTF needed).
struct map_def {
    __u32 type, key_size, value_size, max_entries, map_flags;
};

struct leg_key {
    __be32 saddr, daddr;
    __be16 sport, dport;
};

// Mirrored by `Leg` in legs.rs: keep the two in step.
struct leg {
    __be32 saddr, daddr;  // what the segment leaves with
    __be16 sport, dport;
    __u32 state;          // LEG_*
    __u32 seq_add;        // leaving seq = arriving seq + seq_add
    __u32 split_at;       // portal leg: where the portal's close_notify record starts
    __u32 base;           // portal leg: the destination-side seq of the first spliced byte
    __u32 watch_ack;      // an ACK reaching this raises EV_ACKED (once, F_WATCH_ACK)
    __u32 ts_off;         // leaving TSval = CLOCK_MONOTONIC ms + ts_off (the gate's clock on the other connection)
    __u32 ts_recent;      // the latest TSval that arrived on this leg
    __u32 in_ifindex;     // where this leg's segments arrive
    __u8 ws_in, ws_out;   // window scale of the arriving window, of the leaving one
    __u8 flags;           // F_*
    __u8 pad;
    __u64 bytes;          // payload spliced
    __u64 packets;        // segments spliced
    __u64 last_ns;        // CLOCK_MONOTONIC of the last segment seen
};

struct event {
    struct leg_key key;
    __u32 kind;  // EV_*
};

// RESET: how both peers learn of a tunnel the gate ended. Each segment is answered with a RST to
// its sender and goes on as a RST to the other peer (its sequence number translated like any
// other), both exact, so both peers accept them.
enum { LEG_WATCH = 0, LEG_FREEZE = 1, LEG_SPLICE = 2, LEG_RESET = 3 };
enum {
    F_SPLIT_PENDING = 1,  // portal leg: the close_notify's end (the split) not seen yet
    F_WATCH_ACK = 2,
    F_TS_SEEN = 4,
    F_FIN = 8,
    F_RST = 16,
};
enum { EV_ACKED = 1, EV_FIN = 2, EV_RST = 3 };

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_SACK 5
#define TCPOPT_TIMESTAMP 8
#define TLS_ALERT 21
#define TLS_APPLICATION_DATA 23
#define TLS_RECORD_HEADER 5

struct map_def SEC("maps") LEGS = {
    .type = BPF_MAP_TYPE_HASH,
    .key_size = sizeof(struct leg_key),
    .value_size = sizeof(struct leg),
    .max_entries = 131072,
};

struct map_def SEC("maps") EVENTS = {
    .type = BPF_MAP_TYPE_RINGBUF,
    .max_entries = 256 * 1024,
};

static __always_inline void emit(const struct leg_key *key, __u32 kind)
{
    struct event ev = {.key = *key, .kind = kind};
    bpf_ringbuf_output(&EVENTS, &ev, sizeof(ev), 0);
}

static __always_inline int after_eq(__u32 a, __u32 b)
{
    return (__s32)(a - b) >= 0;
}

// Options sit at any byte offset: 32-bit fields are read and written a byte at a time.
static __always_inline __u32 get32(const __u8 *h, __u32 p)
{
    return (__u32)h[p & 63] << 24 | (__u32)h[(p + 1) & 63] << 16 | (__u32)h[(p + 2) & 63] << 8 |
           h[(p + 3) & 63];
}

static __always_inline void put32(__u8 *h, __u32 p, __u32 v)
{
    h[p & 63] = v >> 24;
    h[(p + 1) & 63] = v >> 16;
    h[(p + 2) & 63] = v >> 8;
    h[(p + 3) & 63] = v;
}

// One pass over the TCP options of a header copy, an option per bpf_loop step (the verifier
// checks the step once instead of every path through a loop).
struct opts {
    __u8 h[64];
    __u32 i, hl;
    __u32 out;        // rewrite (else only learn)
    __u32 ack_sub;    // subtracted from SACK edges
    __u32 tsval_out;  // the TSval that leaves
    __u32 tsecr_out;  // the TSecr that leaves, if echo_known
    __u32 echo_known;
    __u32 tsval_in;   // the arriving TSval, if ts_seen
    __u32 ts_seen;
};

static long option(__u32 n, struct opts *o)
{
    __u32 i = o->i;
    if (i >= o->hl || i >= 60)
        return 1;
    __u8 kind = o->h[i & 63];
    if (kind == TCPOPT_EOL)
        return 1;
    if (kind == TCPOPT_NOP) {
        o->i = i + 1;
        return 0;
    }
    if (i + 1 >= o->hl)
        return 1;
    __u32 len = o->h[(i + 1) & 63];
    if (len < 2 || i + len > o->hl)
        return 1;
    if (kind == TCPOPT_TIMESTAMP && len == 10) {
        o->tsval_in = get32(o->h, i + 2);
        o->ts_seen = 1;
        if (o->out) {
            put32(o->h, i + 2, o->tsval_out);
            if (o->echo_known)
                put32(o->h, i + 6, o->tsecr_out);
        }
    } else if (o->out && kind == TCPOPT_SACK) {
        // Edges are in the acknowledgement's space: translated as the ACK is.
        for (__u32 e = 2; e + 4 <= len && e < 40; e += 4)
            put32(o->h, i + e, get32(o->h, i + e) - o->ack_sub);
    }
    o->i = i + len;
    return 0;
}

static __always_inline void learn_ts(struct leg *leg, const struct opts *o)
{
    if (o->ts_seen && (!(leg->flags & F_TS_SEEN) || (__s32)(o->tsval_in - leg->ts_recent) > 0)) {
        leg->ts_recent = o->tsval_in;
        leg->flags |= F_TS_SEEN;
    }
}

SEC("classifier")
int connect_splice(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
        return TC_ACT_OK;
    if (ip->frag_off & bpf_htons(0x3fff))
        return TC_ACT_OK;
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end)
        return TC_ACT_OK;
    struct leg_key key = {
        .saddr = ip->saddr, .daddr = ip->daddr, .sport = tcp->source, .dport = tcp->dest};
    struct leg *leg = bpf_map_lookup_elem(&LEGS, &key);
    if (!leg)
        return TC_ACT_OK;

    const __u32 ip_off = sizeof(struct ethhdr);
    const __u32 tcp_off = ip_off + sizeof(struct iphdr);
    __u32 hl = tcp->doff * 4;
    if (hl < sizeof(struct tcphdr) || hl > 60)
        return TC_ACT_OK;
    int syn = tcp->syn;
    __u32 tot = bpf_ntohs(ip->tot_len);
    if (tot < sizeof(struct iphdr) + hl)
        return TC_ACT_OK;
    __u32 payload = tot - sizeof(struct iphdr) - hl;
    __u32 seq = bpf_ntohl(tcp->seq);
    __u32 ack = bpf_ntohl(tcp->ack_seq);
    int has_ack = tcp->ack, fin = tcp->fin, rst = tcp->rst;
    __be32 old_saddr = ip->saddr, old_daddr = ip->daddr;

    __u8 old[64] = {};
    struct opts o = {.i = sizeof(struct tcphdr), .hl = hl};
    if (bpf_skb_load_bytes(skb, tcp_off, old, hl))
        return TC_ACT_OK;
    __builtin_memcpy(o.h, old, sizeof(old));

    leg->last_ns = bpf_ktime_get_ns();
    leg->in_ifindex = skb->ingress_ifindex;
    int reset = leg->state == LEG_RESET;
    if (syn || (leg->state != LEG_SPLICE && !reset)) {
        // The SYN-ACK's TSval included: the first the gate's socket echoes.
        bpf_loop(40, option, &o, 0);
        learn_ts(leg, &o);
        if (syn)
            return TC_ACT_OK;
        // FREEZE: the destination's data waits (it retransmits) until the splice is set up.
        return leg->state == LEG_FREEZE && payload ? TC_ACT_SHOT : TC_ACT_OK;
    }

    if ((leg->flags & F_SPLIT_PENDING) && !reset) {
        // The portal's close_notify record ends the gate's part of its stream; the raw
        // stream starts right after it. Learn where from the record's header.
        __u32 at = leg->split_at;
        if (payload && !after_eq(seq, at + 1) && after_eq(seq + payload, at + TLS_RECORD_HEADER)) {
            __u8 rec[TLS_RECORD_HEADER];
            __u32 k = (at - seq) & 0xffff;
            if (bpf_skb_load_bytes(skb, tcp_off + hl + k, rec, sizeof(rec)))
                return TC_ACT_SHOT;
            // An alert (TLS 1.2) or, under TLS 1.3, a record of any inner type.
            if ((rec[0] != TLS_ALERT && rec[0] != TLS_APPLICATION_DATA) || rec[1] != 3)
                return TC_ACT_SHOT;  // not the close_notify the protocol promises
            __u32 split = at + TLS_RECORD_HEADER + ((__u32)rec[3] << 8 | rec[4]);
            leg->seq_add = leg->base - split;
            leg->flags &= ~F_SPLIT_PENDING;
        } else if (payload && after_eq(seq, at)) {
            return TC_ACT_SHOT;  // beyond the record before its header: wait for it in order
        } else if (payload) {
            return TC_ACT_OK;  // the gate's TLS bytes, retransmitted: its socket answers
        }
    }

    struct leg_key rkey = {
        .saddr = leg->daddr, .daddr = leg->saddr, .sport = leg->dport, .dport = leg->sport};
    struct leg *other = bpf_map_lookup_elem(&LEGS, &rkey);
    if (!other || (other->state != LEG_SPLICE && other->state != LEG_RESET) || !other->in_ifindex)
        return TC_ACT_SHOT;

    if (has_ack && (leg->flags & F_WATCH_ACK) && after_eq(ack, leg->watch_ack)) {
        leg->flags &= ~F_WATCH_ACK;
        emit(&key, EV_ACKED);
    }
    if (fin && !(leg->flags & F_FIN)) {
        leg->flags |= F_FIN;
        emit(&key, EV_FIN);
    }
    if ((rst || reset) && !(leg->flags & F_RST)) {
        leg->flags |= F_RST;
        emit(&key, EV_RST);
    }

    if (reset && !rst) {
        // The sender gets a RST of its own first, back out of the interface it came in by: its
        // sequence number the sender's acknowledgement (exact), its timestamp on the clock the
        // sender hears from the gate. The segment itself then goes on as a RST to the other.
        struct opts r = {.i = sizeof(struct tcphdr), .hl = hl, .out = 1};
        __builtin_memcpy(r.h, old, sizeof(old));
        struct tcphdr *rt = (struct tcphdr *)r.h;
        __be16 port = rt->source;
        rt->source = rt->dest;
        rt->dest = port;
        rt->seq = rt->ack_seq;
        rt->ack_seq = 0;
        r.h[13] = 0x04;  // RST alone
        rt->window = 0;
        r.tsval_out = bpf_ktime_get_ns() / 1000000 + other->ts_off;
        r.tsecr_out = leg->ts_recent;
        r.echo_known = leg->flags & F_TS_SEEN;
        bpf_loop(40, option, &r, 0);
        __s64 rdiff = bpf_csum_diff((__be32 *)old, hl, (__be32 *)r.h, hl, 0);
        __u8 macs[12], swapped[12];
        // Swapping the addresses leaves both checksums as they are.
        if (rdiff < 0 || bpf_skb_store_bytes(skb, tcp_off, r.h, hl, 0) ||
            bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), 0, rdiff, 0) ||
            bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, saddr), &old_daddr, 4, 0) ||
            bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, daddr), &old_saddr, 4, 0) ||
            bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)))
            return TC_ACT_SHOT;
        __builtin_memcpy(swapped, macs + 6, 6);
        __builtin_memcpy(swapped + 6, macs, 6);
        if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0))
            return TC_ACT_SHOT;
        bpf_clone_redirect(skb, skb->ingress_ifindex, 0);
        // What follows rewrites the reflected segment now in the buffer.
        __builtin_memcpy(old, r.h, sizeof(old));
        __be32 a = old_saddr;
        old_saddr = old_daddr;
        old_daddr = a;
    }

    // The acknowledgement (and SACK) space of this leg is the other leg's sequence space.
    __u32 ack_sub = other->seq_add;
    struct tcphdr *t = (struct tcphdr *)o.h;
    t->source = leg->sport;
    t->dest = leg->dport;
    t->seq = bpf_htonl(seq + leg->seq_add);
    if (has_ack)
        t->ack_seq = bpf_htonl(ack - ack_sub);
    __u32 win = ((__u32)bpf_ntohs(t->window) << leg->ws_in) >> leg->ws_out;
    t->window = bpf_htons(win > 0xffff ? 0xffff : win);
    if (reset) {
        t->rst = 1;
        t->fin = 0;
        t->psh = 0;
    }
    o.out = 1;
    o.ack_sub = ack_sub;
    o.tsval_out = bpf_ktime_get_ns() / 1000000 + leg->ts_off;
    o.tsecr_out = other->ts_recent;
    o.echo_known = other->flags & F_TS_SEEN;
    bpf_loop(40, option, &o, 0);
    learn_ts(leg, &o);

    // The header as it leaves, and its checksum: the header's own difference, then the
    // pseudo-header's addresses (both helpers know CHECKSUM_PARTIAL from a full checksum).
    __s64 diff = bpf_csum_diff((__be32 *)old, hl, (__be32 *)o.h, hl, 0);
    if (diff < 0)
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, tcp_off, o.h, hl, 0))
        return TC_ACT_SHOT;
    const __u32 csum = tcp_off + offsetof(struct tcphdr, check);
    if (bpf_l4_csum_replace(skb, csum, 0, diff, 0) ||
        bpf_l4_csum_replace(skb, csum, old_saddr, leg->saddr, BPF_F_PSEUDO_HDR | 4) ||
        bpf_l4_csum_replace(skb, csum, old_daddr, leg->daddr, BPF_F_PSEUDO_HDR | 4))
        return TC_ACT_SHOT;
    const __u32 ipcsum = ip_off + offsetof(struct iphdr, check);
    if (bpf_l3_csum_replace(skb, ipcsum, old_saddr, leg->saddr, 4) ||
        bpf_l3_csum_replace(skb, ipcsum, old_daddr, leg->daddr, 4))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, saddr), &leg->saddr, 4, 0) ||
        bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, daddr), &leg->daddr, 4, 0))
        return TC_ACT_SHOT;

    leg->bytes += payload;
    leg->packets += 1;
    // Out of the other connection's interface; the route and neighbour tables give the
    // next hop's address.
    return bpf_redirect_neigh(other->in_ifindex, NULL, 0, 0);
}

char LICENSE[] SEC("license") = "Apache-2.0";

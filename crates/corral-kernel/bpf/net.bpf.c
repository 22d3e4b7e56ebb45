// SPDX-License-Identifier: GPL-2.0
/* corral: the network table on the session cgroup, and the transparent
 * redirect of the session's TCP connections to corral's egress proxy.
 *
 * connect4/connect6/sendmsg4/sendmsg6 run for every process in the cgroup
 * the program is attached to and in every cgroup below it, including ones
 * created after attach (cgroup BPF effective programs are inherited; attached
 * with BPF_F_ALLOW_MULTI, a descendant cannot override them).
 *
 * Decision: the active generation's port class for (protocol, port), then
 * a longest-prefix match on (generation, protocol, family, class, address).
 * v4-mapped v6 destinations are decided as v4; the unspecified addresses
 * (0.0.0.0, ::, ::ffff:0.0.0.0) are decided as the loopback address they
 * reach. No cell: deny (the table always has the /0 roots). Return 1 lets
 * the call proceed, 0 makes it fail with EPERM.
 *
 * Redirect (only when the `redirect` map says so; otherwise the above is
 * all): a TCP connect (incl. MPTCP subflows, TCP Fast Open's sendto and
 * io_uring's connect, which all pass through the connect hooks) to a
 * destination that is neither loopback nor the proxy itself is
 *   - refused with EPERM, with its deny event, when a forbid decides it
 *     (VF_FORBID); in shadow mode reported as would-deny, then redirected;
 *   - otherwise (permitted, or denied only because nothing permits it)
 *     rewritten to the proxy's address, without an event: the proxy
 *     decides it and records it. v4 -> redirect.v4; v4-mapped on a v6
 *     socket -> ::ffff:redirect.v4; native v6 -> redirect.v6, or EPERM
 *     (rule RULE_NO_REDIRECT) when there is none.
 * The original destination goes into `origin_by_cookie` (socket cookie ->
 * struct origin). The sock_ops program, at TCP_CONNECT_CB (the local port
 * is bound by then), copies it to `origin_by_peer`, keyed by the socket's
 * local address: the peer address the proxy sees on accept, and looks up
 * (and deletes) from userspace. getpeername4/6 make a redirected socket's
 * getpeername() report the original destination. Loopback destinations and
 * UDP are never redirected: the table decides them as above. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "corral.h"
#define RINGBUF_BYTES (1 << 20)
#define CORRAL_WITH_CFG
#include "session.h"

char LICENSE[] SEC("license") = "GPL";


/* Port classes of (generation, protocol) g = gen * 2 + proto: class i covers
 * ports port_bounds[g * MAX_CLASSES + i] .. the next bound - 1; bound 0 is 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4 * MAX_CLASSES);
	__type(key, __u32);
	__type(value, __u16);
} port_bounds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} port_nclass SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct net_key);
	__type(value, struct verdict);
} net_table SEC(".maps");



struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_cfg);
} redirect SEC(".maps");

/* Sizes: the loader shrinks both to 1 entry for a session without a
 * redirect. An entry evicted from origin_by_peer before the proxy took it
 * leaves the proxy without the destination: it must refuse the connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct origin);
} origin_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct peer_key);
	__type(value, struct origin);
} origin_by_peer SEC(".maps");

static __always_inline void emit(struct bpf_sock_addr *ctx, __u32 kind, struct net_key *k, __u16 port,
				 __u32 verdict, __u32 rule, __u32 gen)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = 0;
	e->verdict = verdict;
	e->rule = rule;
	e->gen = gen;
	e->flags = k->proto;
	e->aux = port;
	e->family = k->family;
	__builtin_memcpy(e->addr, k->addr, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->data_len = 0;
	e->data_aux = 0;
	bpf_ringbuf_submit(e, EV_FLAGS);
}

/* Binary search: the last class whose lower bound is <= port. */
static __always_inline int port_class_of(__u32 g, __u16 port, __u16 *out)
{
	__u32 *n = bpf_map_lookup_elem(&port_nclass, &g);
	if (!n || *n == 0 || *n > MAX_CLASSES)
		return -1;
	__u32 lo = 0, hi = *n;
	for (int it = 0; it < 13; it++) {
		if (hi - lo <= 1)
			break;
		__u32 mid = (lo + hi) / 2;
		__u32 k = g * MAX_CLASSES + mid;
		__u16 *b = bpf_map_lookup_elem(&port_bounds, &k);
		if (!b)
			return -1;
		if (*b <= port)
			lo = mid;
		else
			hi = mid;
	}
	*out = lo;
	return 0;
}

/* Sends a TCP connect to the proxy: records the original destination under
 * the socket's cookie, then rewrites the address. Returns the program's
 * verdict; on failure (no v6 proxy, origin not recorded) reports a deny
 * with RULE_NO_REDIRECT and, in shadow mode, lets the connect through
 * unchanged. */
static __always_inline int redirect_connect(struct bpf_sock_addr *ctx, struct redirect_cfg *r,
					    struct net_key *k, __u16 port, int v6, __u32 mode, __u32 gen)
{
	int ok = 1;
	if (k->family == 6 && !r->v6_on)
		ok = 0;
	if (ok) {
		struct origin o = {};
		o.family = k->family;
		o.port = port;
		o.tgid = bpf_get_current_pid_tgid() >> 32;
		__builtin_memcpy(o.addr, k->addr, 16);
		bpf_get_current_comm(o.comm, sizeof(o.comm));
		__u64 cookie = bpf_get_socket_cookie(ctx);
		if (bpf_map_update_elem(&origin_by_cookie, &cookie, &o, BPF_ANY) != 0)
			ok = 0;
	}
	if (!ok) {
		__u32 verdict = mode == MODE_SHADOW ? V_WOULD_DENY : V_DENY;
		emit(ctx, EV_CONNECT, k, port, verdict, RULE_NO_REDIRECT, gen);
		return verdict == V_DENY ? 0 : 1;
	}
	/* `v6` is a constant in each program: connect4 never touches the
	 * user_ip6 fields (the verifier refuses them there). */
	if (!v6) {
		__u32 a;
		__builtin_memcpy(&a, r->v4_addr, 4);
		ctx->user_ip4 = a;
		ctx->user_port = bpf_htons((__u16)r->v4_port);
	} else if (k->family == 4) {
		__u32 a;
		__builtin_memcpy(&a, r->v4_addr, 4);
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = a;
		ctx->user_port = bpf_htons((__u16)r->v4_port);
	} else {
		__u32 w[4];
		__builtin_memcpy(w, r->v6_addr, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
		ctx->user_port = bpf_htons((__u16)r->v6_port);
	}
	return 1;
}

/* The destination is the proxy's own address (not redirected again). */
static __always_inline int is_proxy(struct redirect_cfg *r, struct net_key *k, __u16 port)
{
	__u32 a[4], p[4];
	__builtin_memcpy(a, k->addr, 16);
	if (k->family == 4) {
		__builtin_memcpy(p, r->v4_addr, 4);
		return port == r->v4_port && a[0] == p[0];
	}
	__builtin_memcpy(p, r->v6_addr, 16);
	return r->v6_on && port == r->v6_port && a[0] == p[0] && a[1] == p[1] && a[2] == p[2] &&
	       a[3] == p[3];
}

static __always_inline int decide(struct bpf_sock_addr *ctx, __u32 kind, int v6)
{
	__u32 z = 0;
	struct corral_cfg *c = bpf_map_lookup_elem(&cfg, &z);
	if (!c || !c->ready)
		return 0;
	__u32 gen = c->gen & 1;

	struct net_key k = {};
	k.gen = gen;
	__u32 type = ctx->type;
	__u32 protocol = ctx->protocol;
	if (type == 1 /* SOCK_STREAM */ && (protocol == 0 || protocol == 6 || protocol == 262 /* MPTCP */))
		k.proto = PROTO_TCP;
	else if (type == 2 /* SOCK_DGRAM */ && (protocol == 0 || protocol == 17))
		k.proto = PROTO_UDP;
	else
		k.proto = PROTO_OTHER;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	/* The loopback test is computed from the address words, without a
	 * loop over bytes: a loop with an early exit per byte multiplied the
	 * states the verifier explores afterwards (≈ 50 ms per v6 program
	 * load, paid by every session). */
	int loopback;
	if (!v6) {
		k.family = 4;
		__u32 a = ctx->user_ip4;
		if (a == 0)
			a = bpf_htonl(0x7f000001);
		loopback = (bpf_ntohl(a) >> 24) == 127;
		__builtin_memcpy(k.addr, &a, 4);
	} else {
		__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
		if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
			k.family = 4;
			if (w3 == 0)
				w3 = bpf_htonl(0x7f000001);
			loopback = (bpf_ntohl(w3) >> 24) == 127;
			__builtin_memcpy(k.addr, &w3, 4);
		} else {
			k.family = 6;
			if ((w0 | w1 | w2 | w3) == 0)
				w3 = bpf_htonl(1);
			loopback = (w0 | w1 | w2) == 0 && w3 == bpf_htonl(1);
			__builtin_memcpy(k.addr, &w0, 4);
			__builtin_memcpy(k.addr + 4, &w1, 4);
			__builtin_memcpy(k.addr + 8, &w2, 4);
			__builtin_memcpy(k.addr + 12, &w3, 4);
		}
	}

	/* No cell (the table always has the /0 roots, so only an
	 * inconsistent table has none): deny, as if a forbid said so. */
	__u32 verdict = V_DENY, rule = 0xffffffff;
	int forbid = 1;
	if (c->ctl_port && port == c->ctl_port && loopback) {
		/* corral's control plane: never reachable from a session. */
		rule = 0xfffffffe;
		forbid = 1;
	} else if (k.proto != PROTO_OTHER) {
		__u16 cls;
		if (port_class_of(gen * 2 + k.proto, port, &cls) == 0) {
			k.class = cls;
			k.prefixlen = 48 + (k.family == 4 ? 32 : 128);
			struct verdict *v = bpf_map_lookup_elem(&net_table, &k);
			if (v) {
				verdict = v->v == V_ALLOW ? V_ALLOW : V_DENY;
				rule = v->rule;
				forbid = (v->pad[0] & VF_FORBID) != 0;
			}
		}
	}

	if (kind == EV_CONNECT && k.proto == PROTO_TCP && !loopback) {
		struct redirect_cfg *r = bpf_map_lookup_elem(&redirect, &z);
		if (r && r->on && !is_proxy(r, &k, port)) {
			if (verdict == V_DENY && forbid) {
				/* A forbid decides it: refused here (shadow: reported,
				 * then sent to the proxy like any other). */
				verdict = c->mode == MODE_SHADOW ? V_WOULD_DENY : V_DENY;
				emit(ctx, kind, &k, port, verdict, rule, gen);
				if (verdict == V_DENY)
					return 0;
			}
			return redirect_connect(ctx, r, &k, port, v6, c->mode, gen);
		}
	}

	if (verdict == V_DENY && c->mode == MODE_SHADOW)
		verdict = V_WOULD_DENY;
	emit(ctx, kind, &k, port, verdict, rule, gen);
	return verdict == V_DENY ? 0 : 1;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return decide(ctx, EV_CONNECT, 0);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return decide(ctx, EV_CONNECT, 1);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return decide(ctx, EV_SENDMSG, 0);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return decide(ctx, EV_SENDMSG, 1);
}

/* The local port is bound when TCP_CONNECT_CB runs (before the SYN): the
 * redirected socket's local address is now known, and with it the peer
 * address the proxy will see. skops->local_port is host order. */
SEC("sockops")
int origin_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct origin *o = bpf_map_lookup_elem(&origin_by_cookie, &cookie);
	if (!o)
		return 1;
	struct peer_key pk = {};
	pk.port = (__u16)skops->local_port;
	if (o->family == 4) {
		/* A v4 socket, or a v6 socket connected v4-mapped: the proxy's
		 * v4 socket sees the v4 address. */
		pk.family = 4;
		__u32 a = skops->local_ip4;
		__builtin_memcpy(pk.addr, &a, 4);
	} else {
		pk.family = 6;
		__u32 w0 = skops->local_ip6[0], w1 = skops->local_ip6[1], w2 = skops->local_ip6[2],
		      w3 = skops->local_ip6[3];
		__builtin_memcpy(pk.addr, &w0, 4);
		__builtin_memcpy(pk.addr + 4, &w1, 4);
		__builtin_memcpy(pk.addr + 8, &w2, 4);
		__builtin_memcpy(pk.addr + 12, &w3, 4);
	}
	bpf_map_update_elem(&origin_by_peer, &pk, o, BPF_ANY);
	return 1;
}

/* getpeername() of a redirected socket: the original destination. These
 * programs must return 1. */
SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct origin *o = bpf_map_lookup_elem(&origin_by_cookie, &cookie);
	if (o && o->family == 4) {
		__u32 a;
		__builtin_memcpy(&a, o->addr, 4);
		ctx->user_ip4 = a;
		ctx->user_port = bpf_htons(o->port);
	}
	return 1;
}

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct origin *o = bpf_map_lookup_elem(&origin_by_cookie, &cookie);
	if (!o)
		return 1;
	__u32 w[4];
	if (o->family == 4) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0xffff);
		__builtin_memcpy(&w[3], o->addr, 4);
	} else {
		__builtin_memcpy(w, o->addr, 16);
	}
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = bpf_htons(o->port);
	return 1;
}

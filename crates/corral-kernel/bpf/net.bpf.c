// SPDX-License-Identifier: GPL-2.0
/* corral: the network table on the session cgroup.
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
 * the call proceed, 0 makes it fail with EPERM. */
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

	__u32 verdict = V_DENY, rule = 0xffffffff;
	if (c->ctl_port && port == c->ctl_port && loopback) {
		/* corral's control plane: never reachable from a session. */
		rule = 0xfffffffe;
	} else if (k.proto != PROTO_OTHER) {
		__u16 cls;
		if (port_class_of(gen * 2 + k.proto, port, &cls) == 0) {
			k.class = cls;
			k.prefixlen = 48 + (k.family == 4 ? 32 : 128);
			struct verdict *v = bpf_map_lookup_elem(&net_table, &k);
			if (v) {
				verdict = v->v == V_ALLOW ? V_ALLOW : V_DENY;
				rule = v->rule;
			}
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

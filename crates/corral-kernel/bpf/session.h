/* What every corral BPF object has, each object its own copy: the event
 * ring buffer, the loss counter, and (where the object is not attached to
 * the session cgroup itself) the session test. Include after vmlinux.h,
 * bpf_helpers.h and corral.h. Before including, define:
 *   RINGBUF_BYTES          ring buffer size (default 4 MiB)
 *   CORRAL_WITH_CFG        to get the `cfg` map (generation, mode, ready)
 *   CORRAL_SESSION_CGROUP  to get session_cgid/session_level and in_session() */
#ifndef CORRAL_SESSION_H
#define CORRAL_SESSION_H

#ifndef RINGBUF_BYTES
#define RINGBUF_BYTES (1 << 22)
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RINGBUF_BYTES);
} events SEC(".maps");

/* [0]: events that did not fit in the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Events are written without waking the reader (BPF_RB_NO_WAKEUP): it
 * drains the ring buffer every few milliseconds instead, so a busy session
 * does not pay a wakeup per decision. Records someone waits on (an exec
 * stopped for its argv decision) force the wakeup. */
#define EV_FLAGS BPF_RB_NO_WAKEUP

static __always_inline void count_lost(void)
{
	__u32 z = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &z);
	if (n)
		__sync_fetch_and_add(n, 1);
}

#ifdef CORRAL_WITH_CFG
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct corral_cfg);
} cfg SEC(".maps");
#endif

#ifdef CORRAL_SESSION_CGROUP
const volatile __u64 session_cgid = 0;
const volatile __u32 session_level = 0;

/* The current task is in the session cgroup or below it (also in cgroups
 * created there after the programs were loaded). */
static __always_inline int in_session(void)
{
	return bpf_get_current_ancestor_cgroup_id(session_level) == session_cgid;
}
#endif

#endif

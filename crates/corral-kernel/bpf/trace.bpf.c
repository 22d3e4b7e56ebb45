// SPDX-License-Identifier: GPL-2.0
/* corral: telemetry tracepoints for one session.
 *
 * - sched_process_exec (tp_btf): the executed file name and argv, read from
 *   the new image's memory before it runs its first instruction;
 * - sched_process_fork / sched_process_exit (tp_btf): the process tree;
 * - sys_enter/exit_{openat,openat2,creat}: the open flags of each thread's
 *   in-flight open, which the fanotify fallback reads to tell a read-only
 *   open from a writable one (fanotify does not report the open flags).
 *
 * Only tasks whose cgroup is the session cgroup or below it count:
 * bpf_get_current_ancestor_cgroup_id(level) == session cgroup id holds for
 * cgroups created beneath the session after the programs were loaded. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "corral.h"
#define CORRAL_SESSION_CGROUP
#include "session.h"

char LICENSE[] SEC("license") = "GPL";



/* tid -> open flags of the open(2) in flight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} open_flags SEC(".maps");

/* [0]: 0 = exec arguments are not decided; 1 = stop each new image before
 * its first instruction until userspace decides (enforce); 2 = report only
 * (shadow). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} argv_mode SEC(".maps");

/* tgid -> 1 while stopped awaiting an argv decision. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} pending SEC(".maps");

#define SIGCONT 18
#define SIGSTOP 19
#define EPERM 1
#define EXEC_STOPPED 2

struct scratch {
	struct event e;
	char data[PATH_CAP + ARGV_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} buf SEC(".maps");

static __always_inline void fill(struct event *e, __u32 kind, struct task_struct *t)
{
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->verdict = V_NONE;
	e->rule = 0;
	e->gen = 0;
	e->flags = 0;
	e->aux = 0;
	e->family = 0;
	e->data_len = 0;
	e->data_aux = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!in_session())
		return 0;
	__u32 z = 0;
	struct scratch *s = bpf_map_lookup_elem(&buf, &z);
	if (!s)
		return 0;
	fill(&s->e, EV_EXEC_TRACE, p);
	const char *fname = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(s->data, PATH_CAP, fname);
	if (n < 0)
		n = 0;
	__u32 plen = n & (PATH_CAP - 1);
	s->e.data_aux = plen;
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long a0 = BPF_CORE_READ(mm, arg_start), a1 = BPF_CORE_READ(mm, arg_end);
	__u32 alen = 0;
	if (a1 > a0) {
		unsigned long want = a1 - a0;
		/* argv longer than we carry: flags bit 0 says truncated. */
		if (want > ARGV_MAX - 1) {
			want = ARGV_MAX - 1;
			s->e.flags |= 1;
		}
		alen = want & (ARGV_MAX - 1);
		if (bpf_probe_read_user(s->data + plen, alen, (void *)a0) < 0)
			alen = 0;
	}
	__u32 *am = bpf_map_lookup_elem(&argv_mode, &z);
	if (am && *am == 1) {
		/* Stop-and-decide: SIGSTOP is delivered on the way back to user
		 * mode, before the new image's first instruction; userspace
		 * continues or kills it. */
		__u32 tgid = s->e.pid, one = 1;
		bpf_map_update_elem(&pending, &tgid, &one, BPF_ANY);
		bpf_send_signal(SIGSTOP);
		s->e.flags |= EXEC_STOPPED;
	}
	__u64 size = sizeof(struct event) + plen + alen;
	s->e.data_len = plen + alen;
	if (size > sizeof(struct scratch))
		size = sizeof(struct scratch);
	if (bpf_ringbuf_output(&events, s, size,
			       (s->e.flags & EXEC_STOPPED) ? BPF_RB_FORCE_WAKEUP : EV_FLAGS))
		count_lost();
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!in_session())
		return 0;
	/* New processes only, not threads. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return 0;
	}
	fill(e, EV_FORK, parent);
	e->aux = BPF_CORE_READ(child, tgid);
	bpf_ringbuf_submit(e, EV_FLAGS);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	if (!in_session())
		return 0;
	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return 0;
	}
	fill(e, EV_EXIT, p);
	e->aux = BPF_CORE_READ(p, exit_code);
	bpf_ringbuf_submit(e, EV_FLAGS);
	return 0;
}

static __always_inline void remember(__u32 flags)
{
	if (!in_session())
		return;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&open_flags, &tid, &flags, BPF_ANY);
}

static __always_inline void forget(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&open_flags, &tid);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	remember((__u32)ctx->args[2]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(void *ctx)
{
	forget();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};
	if (bpf_probe_read_user(&how, sizeof(how.flags), (void *)ctx->args[2]) < 0)
		return 0; /* unknown: the fallback decides with the stricter table */
	remember((__u32)how.flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(void *ctx)
{
	forget();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_creat")
int enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	remember(01 | 0100 | 01000); /* O_WRONLY | O_CREAT | O_TRUNC */
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int exit_creat(void *ctx)
{
	forget();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int enter_open(struct trace_event_raw_sys_enter *ctx)
{
	remember((__u32)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(void *ctx)
{
	forget();
	return 0;
}

/* An execve in flight: its opens of the binary and the interpreter are
 * exec opens (fanotify reports them as plain opens too). */
#define OPEN_FLAGS_EXEC 0xffffffffu

SEC("tracepoint/syscalls/sys_enter_execve")
int enter_execve(void *ctx)
{
	remember(OPEN_FLAGS_EXEC);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int exit_execve(void *ctx)
{
	forget();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int enter_execveat(void *ctx)
{
	remember(OPEN_FLAGS_EXEC);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int exit_execveat(void *ctx)
{
	forget();
	return 0;
}

/* BPF LSM only (loaded where available): no process of the session may
 * resume a process stopped for an argv decision; only the supervisor,
 * outside the session, continues it. */
SEC("lsm/task_kill")
int BPF_PROG(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	if (sig != SIGCONT || !in_session())
		return 0;
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (bpf_map_lookup_elem(&pending, &tgid))
		return -EPERM;
	return 0;
}

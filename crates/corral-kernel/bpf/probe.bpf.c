// SPDX-License-Identifier: GPL-2.0
/* corral: tiny programs used only by `corral doctor` (src/probe.rs) to find
 * out, by loading and attaching them, which enforcement layers this kernel
 * allows. None of them decides anything: each lets everything through and
 * only counts that it ran, so the probe can tell "attached" from "runs". */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Indices of `hits`. */
#define HIT_LSM 0
#define HIT_TRACEPOINT 1
#define HIT_RAW_TP 2
#define HIT_TP_BTF 3

/* The probing process: the LSM program counts only its opens. */
const volatile __u32 target_tgid = 0;

/* Written by nobody: keeps bpf_send_signal behind a condition the verifier
 * cannot prove false (a .rodata constant would let it prune the call
 * unchecked), so loading the program really tests the helper. */
__u32 never = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 i)
{
	__u64 *n = bpf_map_lookup_elem(&hits, &i);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("lsm/file_open")
int BPF_PROG(probe_lsm_file_open, struct file *file)
{
	if ((bpf_get_current_pid_tgid() >> 32) == target_tgid)
		hit(HIT_LSM);
	return 0;
}

SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("tracepoint/sched/sched_process_exec")
int probe_tracepoint_exec(void *ctx)
{
	hit(HIT_TRACEPOINT);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int probe_raw_tp_exec(void *ctx)
{
	hit(HIT_RAW_TP);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	hit(HIT_TP_BTF);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int probe_send_signal(void *ctx)
{
	if (never == 0xC0DDA11u)
		bpf_send_signal(9 /* SIGKILL */);
	return 0;
}

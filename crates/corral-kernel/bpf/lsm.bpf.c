// SPDX-License-Identifier: GPL-2.0
/* corral: file-open and exec decisions in BPF LSM, for one session.
 *
 * file_open            read-only vs writable from f_mode (and O_TRUNC);
 *                      opens made by exec are left to bprm_check_security
 * bprm_check_security  the file actually executed (bprm->file): the binary,
 *                      and again the interpreter of a script
 * mmap_file            an executable mapping of a file whose exec a forbid
 *                      denies (what `ld.so /path/bin` and dlopen do)
 *
 * The path is the object's path from bpf_d_path (as the task sees it:
 * symlinks, "..", /proc/self/fd/N and /proc/self/root are already
 * resolved to the object). Lookup: the exact path, then each ancestor
 * directory from the deepest up, in the active generation's table.
 * Denials return -EPERM, the errno the fanotify fallback gives. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "corral.h"
#define CORRAL_WITH_CFG
#define CORRAL_SESSION_CGROUP
#include "session.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define FMODE_WRITE 0x2
#define FMODE_EXEC 0x20
#define O_TRUNC 01000
#define S_IFMT 0170000
#define S_IFDIR 0040000
#define PROT_EXEC 0x4


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct path_key);
	__type(value, struct path_val);
} paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ino_key);
	__type(value, struct verdict);
} denied_ino SEC(".maps");

/* Preallocated (no BPF_F_NO_PREALLOC): used by the sleepable program. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct size_key);
	__type(value, __u32);
} denied_size SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct hash_key);
	__type(value, struct verdict);
} denied_hash SEC(".maps");



/* Per-CPU work area: the event header directly followed by the path, so
 * one ringbuf_output sends both. */
struct work {
	struct event e;
	char buf[4096];
	struct path_key key;
	__u32 start;
	__u32 is_dir;
	__u32 found;
	struct verdict out;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct work);
} work SEC(".maps");

/* bpf_loop's context must live on the stack on older kernels (6.1): it
 * carries the pointer to the per-CPU work area. */
struct walk_ctx {
	struct work *w;
};

/* One step of the ancestor walk, from the deepest byte up. */
static long walk(__u64 index, void *ctx)
{
	struct work *w = ((struct walk_ctx *)ctx)->w;
	if (!w)
		return 1;
	__s64 i = (__s64)w->start - (__s64)index;
	if (i < 0)
		return 1;
	__u32 j = (__u32)i & (PKEY_MAX - 1);
	if (w->key.path[j] == '/') {
		if (j == 0) {
			w->key.len = 1;
		} else {
			w->key.path[j] = 0;
			w->key.len = j;
		}
		struct path_val *v = bpf_map_lookup_elem(&paths, &w->key);
		if (v && v->has_dir) {
			w->out = w->is_dir ? v->dirs : v->files;
			w->found = 1;
			return 1;
		}
		return 0;
	}
	w->key.path[j] = 0;
	return 0;
}

/* Decides `path` in table `table`; fills w->out. Returns the path length. */
static __always_inline long lookup(struct work *w, __u8 gen, __u8 table, struct path *path, int is_dir)
{
	w->found = 0;
	w->out.v = V_DENY;
	w->out.pad[0] = 0;
	w->out.rule = 0xffffffff;
	long n = bpf_d_path(path, w->buf, sizeof(w->buf));
	if (n <= 0)
		return -1;
	long len = n - 1;
	__builtin_memset(&w->key, 0, sizeof(w->key));
	w->key.gen = gen;
	w->key.table = table;
	bpf_probe_read_kernel_str(w->key.path, PKEY_MAX, w->buf);
	w->is_dir = is_dir || len == 1;
	if (len <= PKEY_MAX - 2) {
		w->key.len = len;
		struct path_val *v = bpf_map_lookup_elem(&paths, &w->key);
		if (v) {
			if (w->is_dir && v->has_dir) {
				w->out = v->itself;
				w->found = 1;
			} else if (!w->is_dir && v->has_file) {
				w->out = v->file;
				w->found = 1;
			}
		}
	}
	if (!w->found) {
		w->start = (len < PKEY_MAX - 1 ? len : PKEY_MAX - 1) - 1;
		struct walk_ctx wc = { .w = w };
		bpf_loop(PKEY_MAX, walk, &wc, 0);
	}
	return len;
}

static __always_inline void emit(struct work *w, __u32 kind, __u32 verdict, __u32 gen, __u32 access, long len)
{
	struct event *e = &w->e;
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->verdict = verdict;
	e->rule = w->out.rule;
	e->gen = gen;
	e->flags = access;
	e->aux = 0;
	e->family = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (len < 0)
		len = 0;
	__u32 dl = (__u32)len & 4095;
	e->data_len = dl;
	e->data_aux = 0;
	__u64 size = sizeof(struct event) + dl;
	if (size > sizeof(struct event) + 4096)
		size = sizeof(struct event) + 4096;
	if (bpf_ringbuf_output(&events, e, size, EV_FLAGS))
		count_lost();
}

/* A binary a forbid denies, reached by another name (hardlink, rename). */
static __always_inline void identity(struct work *w, __u32 gen, struct file *f)
{
	if (w->out.v == V_DENY)
		return;
	struct ino_key k = {};
	k.ino = BPF_CORE_READ(f, f_inode, i_ino);
	k.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	k.gen = gen;
	struct verdict *v = bpf_map_lookup_elem(&denied_ino, &k);
	if (v)
		w->out = *v;
}

/* The common decision: table lookup, shadow mode, event, return value. */
static __always_inline int decide(__u8 table, struct file *f, int is_dir, __u32 kind, __u32 access)
{
	__u32 z = 0;
	struct corral_cfg *c = bpf_map_lookup_elem(&cfg, &z);
	struct work *w = bpf_map_lookup_elem(&work, &z);
	if (!c || !w)
		return -EPERM;
	__u32 gen = c->gen & 1;
	long len = -1;
	if (c->ready) {
		len = lookup(w, gen, table, (struct path *)&f->f_path, is_dir);
		if (table == T_EXEC)
			identity(w, gen, f);
	} else
		w->out.v = V_DENY;
	__u32 verdict = w->out.v == V_ALLOW ? V_ALLOW : (w->out.v == V_USERSPACE ? V_USERSPACE : V_DENY);
	if (verdict == V_DENY && c->mode == MODE_SHADOW)
		verdict = V_WOULD_DENY;
	emit(w, kind, verdict, gen, access, len);
	return verdict == V_DENY ? -EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	if (!in_session())
		return 0;
	__u32 fmode = BPF_CORE_READ(file, f_mode);
	if (fmode & FMODE_EXEC)
		return 0;
	__u32 flags = BPF_CORE_READ(file, f_flags);
	int write = (fmode & FMODE_WRITE) || (flags & O_TRUNC);
	__u32 imode = BPF_CORE_READ(file, f_inode, i_mode);
	int is_dir = (imode & S_IFMT) == S_IFDIR;
	return decide(write ? T_WRITE : T_READ, file, is_dir, EV_FILE_OPEN, write ? ACC_WRITE : ACC_READ);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	if (!in_session())
		return 0;
	/* A direct (BTF) load keeps `f` a trusted pointer, which bpf_d_path
	 * requires; BPF_CORE_READ would turn it into a plain scalar. */
	struct file *f = bprm->file;
	if (!f)
		return -EPERM;
	return decide(T_EXEC, f, 0, EV_EXEC, ACC_EXEC);
}

SEC("lsm/mmap_file")
int BPF_PROG(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long mflags, int ret)
{
	if (ret)
		return ret;
	if (!file || !(prot & PROT_EXEC))
		return 0;
	if (!in_session())
		return 0;
	__u32 z = 0;
	struct corral_cfg *c = bpf_map_lookup_elem(&cfg, &z);
	struct work *w = bpf_map_lookup_elem(&work, &z);
	if (!c || !w || !c->ready)
		return -EPERM;
	__u32 gen = c->gen & 1;
	long len = lookup(w, gen, T_EXEC, (struct path *)&file->f_path, 0);
	identity(w, gen, file);
	/* Only a forbid extends to executable mappings: shared libraries are
	 * mapped executable by every program, and "no permit names them" must
	 * not break every dynamically linked binary. */
	if (w->out.v != V_DENY || !(w->out.pad[0] & VF_FORBID))
		return 0;
	__u32 verdict = c->mode == MODE_SHADOW ? V_WOULD_DENY : V_DENY;
	emit(w, EV_EXEC, verdict, gen, ACC_EXEC, len);
	return verdict == V_DENY ? -EPERM : 0;
}

/* Mount tricks: a process of the session could bind a forbidden file or
 * directory somewhere its policy allows (in a private mount namespace) and
 * open it under that alias. Session processes may not mount, move mounts,
 * or create user namespaces (which would give them CAP_SYS_ADMIN over a
 * new mount namespace). */
SEC("lsm/sb_mount")
int BPF_PROG(sb_mount, const char *dev_name, const struct path *path, const char *type, unsigned long flags,
	     void *data, int ret)
{
	if (ret)
		return ret;
	return in_session() ? -EPERM : 0;
}

SEC("lsm/move_mount")
int BPF_PROG(move_mount, const struct path *from_path, const struct path *to_path, int ret)
{
	if (ret)
		return ret;
	return in_session() ? -EPERM : 0;
}

SEC("lsm/userns_create")
int BPF_PROG(userns_create, const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	return in_session() ? -EPERM : 0;
}

#define HASH_ALGO_SHA256 4

/* Byte copies of a forbidden binary (sleepable: IMA hashes the file). */
SEC("lsm.s/bprm_check_security")
int BPF_PROG(bprm_hash, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	if (!in_session())
		return 0;
	__u32 z = 0;
	struct corral_cfg *c = bpf_map_lookup_elem(&cfg, &z);
	struct work *w = bpf_map_lookup_elem(&work, &z);
	if (!c || !w || !c->ready)
		return -EPERM;
	__u32 gen = c->gen & 1;
	struct file *f = bprm->file;
	if (!f)
		return -EPERM;
	struct size_key sk = {};
	sk.size = BPF_CORE_READ(f, f_inode, i_size);
	sk.gen = gen;
	if (!bpf_map_lookup_elem(&denied_size, &sk))
		return 0;
	struct hash_key hk = {};
	hk.gen = gen;
	long algo = bpf_ima_file_hash(f, hk.sha256, sizeof(hk.sha256));
	struct verdict *v = 0;
	if (algo == HASH_ALGO_SHA256)
		v = bpf_map_lookup_elem(&denied_hash, &hk);
	/* Same size as a forbidden binary but no SHA-256 to compare: deny. */
	if (!v && algo == HASH_ALGO_SHA256)
		return 0;
	w->out.v = V_DENY;
	w->out.pad[0] = VF_FORBID;
	w->out.rule = v ? v->rule : 0xfffffffd;
	long n = bpf_d_path((struct path *)&f->f_path, w->buf, sizeof(w->buf));
	__u32 verdict = c->mode == MODE_SHADOW ? V_WOULD_DENY : V_DENY;
	emit(w, EV_EXEC, verdict, gen, ACC_EXEC, n > 0 ? n - 1 : 0);
	return verdict == V_DENY ? -EPERM : 0;
}

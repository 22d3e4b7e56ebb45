/* Shared between corral's BPF programs and the Rust loader (src/abi.rs
 * mirrors every struct here; a layout test checks the sizes). */
#ifndef CORRAL_H
#define CORRAL_H

/* Verdicts stored in tables and reported in events. */
#define V_NONE 0       /* telemetry: nothing decided */
#define V_ALLOW 1
#define V_DENY 2
#define V_WOULD_DENY 3 /* shadow mode: policy denies, request let through */
#define V_USERSPACE 4  /* table says: ask the Cedar authorizer */

/* Event kinds. */
#define EV_CONNECT 1
#define EV_SENDMSG 2
#define EV_FILE_OPEN 3
#define EV_EXEC 4       /* exec decision (LSM) */
#define EV_EXEC_TRACE 5 /* sched_process_exec: path + argv */
#define EV_FORK 6
#define EV_EXIT 7

/* Access bits (EV_FILE_OPEN flags). */
#define ACC_READ 1
#define ACC_WRITE 2
#define ACC_EXEC 4

/* Protocol indices of the net tables. */
#define PROTO_TCP 0
#define PROTO_UDP 1
#define PROTO_OTHER 2

#define MODE_ENFORCE 0
#define MODE_SHADOW 1

#define PATH_CAP 1024 /* exec telemetry: file name bytes carried */
#define ARGV_MAX 4096 /* exec telemetry: argv bytes carried */
#define MAX_CLASSES 4096 /* port classes per (generation, protocol) */

/* Per-session runtime configuration: one element, swapped as a whole. */
struct corral_cfg {
	__u32 gen;      /* active table generation (0 or 1) */
	__u32 mode;     /* MODE_* */
	__u32 ctl_port; /* corral's own API/UI port, host order; 0 = none */
	__u32 ready;    /* 0 until the first tables are in place: deny all */
};

/* Value of every table cell. */
struct verdict {
	__u8 v;       /* V_ALLOW, V_DENY, V_USERSPACE */
	__u8 pad[3];
	__u32 rule;   /* row in the generation's verdict list (userspace) */
};

/* LPM trie key of the net table: 48 fixed bits, then the address. */
struct net_key {
	__u32 prefixlen; /* 48 + address prefix length */
	__u8 gen;
	__u8 proto;      /* PROTO_TCP / PROTO_UDP */
	__u8 family;     /* 4 or 6 */
	__u8 pad;
	__u16 class;     /* port class */
	__u8 addr[16];   /* v4 in the first 4 bytes */
	__u16 tail;      /* beyond every prefix; keeps the key 28 bytes */
};

/* Event header; `data` (path, argv) follows for events that carry it. */
struct event {
	__u64 ts_ns;
	__u32 kind;
	__u32 pid;      /* tgid */
	__u32 tid;
	__u32 ppid;
	__u32 verdict;
	__u32 rule;
	__u32 gen;
	__u32 flags;    /* ACC_* for files; 1 = udp for net */
	__u32 aux;      /* child pid, exit code, port */
	__u32 family;
	__u8 addr[16];
	char comm[16];
	__u32 data_len; /* bytes of data that follow */
	__u32 data_aux; /* argv: offset where argv starts (after the path) */
};

/* Path tables (BPF LSM): one hash entry per listed path and table. */
#define T_READ 0
#define T_WRITE 1
#define T_EXEC 2
#define PKEY_MAX 256 /* key bytes; listed paths are at most 254 bytes */

struct path_key {
	__u8 gen;
	__u8 table;  /* T_* */
	__u16 len;   /* bytes of path used; the rest are zero */
	char path[PKEY_MAX];
};

struct path_val {
	__u8 has_file;
	__u8 has_dir;
	__u8 pad[2];
	struct verdict file;   /* File::"<path>" */
	struct verdict itself; /* Dir::"<path>/" itself */
	struct verdict files;  /* files below, not covered deeper */
	struct verdict dirs;   /* directories below, not covered deeper */
};

/* Inode identity of a binary whose exec a forbid denies: a hardlink or a
 * rename of it is denied too. */
struct ino_key {
	__u64 ino;
	__u32 dev; /* kernel dev_t: major << 20 | minor */
	__u32 gen;
};

/* Content identity of a binary whose exec a forbid denies (BPF LSM, via
 * IMA's SHA-256 of the file): a byte copy of it is denied too. The size is
 * checked first, so only files of a forbidden binary's size are hashed. */
struct size_key {
	__u64 size;
	__u32 gen;
	__u32 pad;
};

struct hash_key {
	__u8 sha256[32];
	__u32 gen;
	__u32 pad;
};

/* verdict.pad[0] bit: the deny names a forbid (not just "nothing permits").
 * The network table sets it for every deny a policy decided (and for
 * cells it cannot decide): with a redirect configured, only a deny without
 * it (default deny) goes to the egress proxy. */
#define VF_FORBID 1

/* Rule index of a connection that had to go through the egress proxy and
 * could not: a native v6 destination with no v6 proxy address, or an
 * original destination that could not be recorded. */
#define RULE_NO_REDIRECT 0xfffffffd

/* The egress proxy's listening addresses, as the session reaches them
 * (net.bpf.c's `redirect` map; written once, before the programs attach). */
struct redirect_cfg {
	__u32 on;         /* 0: no redirect, decide as without a proxy */
	__u8 v4_addr[4];  /* network order */
	__u32 v4_port;    /* host order */
	__u32 v6_on;      /* 0: native v6 destinations cannot be redirected */
	__u8 v6_addr[16];
	__u32 v6_port;    /* host order */
};

/* The original destination of a redirected TCP connection. */
struct origin {
	__u8 family;   /* 4 or 6: of addr (v4-mapped destinations are 4, and
			* went to the v4 proxy address; 6 to the v6 one) */
	__u8 pad;
	__u16 port;    /* host order */
	__u32 tgid;    /* the connecting process */
	__u8 addr[16]; /* v4 in the first 4 bytes */
	char comm[16];
};

/* A redirected socket's local address: what the proxy sees as the peer of
 * the connection it accepts. */
struct peer_key {
	__u8 family;   /* 4 or 6 */
	__u8 pad;
	__u16 port;    /* host order */
	__u8 addr[16]; /* v4 in the first 4 bytes */
};

#endif

//! The session's seccomp filter: no new namespaces and no mount changes.
//!
//! Why: the fanotify fallback marks the container's mounts. A process that
//! makes a new mount namespace (`unshare -Um`, possible in a new user
//! namespace without any capability) gets copies of those mounts, which
//! carry no mark, and could open a forbidden file through them. BPF LSM
//! refuses the same operations in the kernel where it is available; this
//! filter closes the hole on every kernel, for the agent and everything it
//! starts (filters are inherited and cannot be removed).
//!
//! Refused with EPERM: `unshare`/`clone` with any `CLONE_NEW*` flag,
//! `setns`, `mount`, `umount2`, `pivot_root`, the new mount API
//! (`open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`,
//! `mount_setattr`), and `open_by_handle_at` (opens by file handle, not by
//! path). `clone3` gets ENOSYS: its flags live in memory a filter cannot
//! read, and C libraries fall back to `clone`, whose flags it can. Other
//! ABIs than x86_64 (i386, x32) are refused outright, so no syscall number
//! of another table slips past.

use crate::ffi;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// `struct seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of `args[0]` (little endian).
const OFF_ARG0: u32 = 16;

const SYS_CLONE: u32 = 56;
const SYS_UNSHARE: u32 = 272;
const SYS_CLONE3: u32 = 435;
/// Refused whatever their arguments.
const REFUSED: &[u32] = &[
    165, // mount
    166, // umount2
    155, // pivot_root
    308, // setns
    304, // open_by_handle_at
    428, // open_tree
    429, // move_mount
    430, // fsopen
    431, // fsconfig
    432, // fsmount
    433, // fspick
    442, // mount_setattr
];

const CLONE_NEWTIME: u32 = 0x0000_0080;
/// Namespace flags `clone` can carry (its low byte is the exit signal, so
/// `CLONE_NEWTIME` is not among them there).
const CLONE_NEW_ALL: u32 = 0x0002_0000 // NEWNS
    | 0x0200_0000 // NEWCGROUP
    | 0x0400_0000 // NEWUTS
    | 0x0800_0000 // NEWIPC
    | 0x1000_0000 // NEWUSER
    | 0x2000_0000 // NEWPID
    | 0x4000_0000; // NEWNET

/// One classic-BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The filter program.
pub fn program() -> Vec<Insn> {
    let eperm = RET_ERRNO | EPERM;
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, OFF_NR),
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, eperm),
    ];
    for nr in REFUSED {
        p.push(insn(JEQ_K, 0, 1, *nr));
        p.push(insn(RET_K, 0, 0, eperm));
    }
    p.push(insn(JEQ_K, 0, 1, SYS_CLONE3));
    p.push(insn(RET_K, 0, 0, RET_ERRNO | ENOSYS));
    for (nr, mask) in [
        (SYS_CLONE, CLONE_NEW_ALL),
        (SYS_UNSHARE, CLONE_NEW_ALL | CLONE_NEWTIME),
    ] {
        // Not this syscall: skip its four instructions.
        p.push(insn(JEQ_K, 0, 4, nr));
        p.push(insn(LD_W_ABS, 0, 0, OFF_ARG0));
        p.push(insn(JSET_K, 0, 1, mask));
        p.push(insn(RET_K, 0, 0, eperm));
        p.push(insn(RET_K, 0, 0, RET_ALLOW));
    }
    p.push(insn(RET_K, 0, 0, RET_ALLOW));
    p
}

/// Installs the filter on this process (and so on everything it forks).
/// Needs no_new_privs first.
pub fn install() -> std::io::Result<()> {
    ffi::install_seccomp_filter(&program())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the program, to test its logic without
    /// installing it.
    fn run(p: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0 => arg0,
                        other => unreachable!("offset {other}"),
                    };
                    pc += 1;
                }
                JEQ_K | JGE_K | JSET_K => {
                    let t = match i.code {
                        JEQ_K => acc == i.k,
                        JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += 1 + usize::from(if t { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                other => unreachable!("opcode {other}"),
            }
        }
    }

    const X86: u32 = AUDIT_ARCH_X86_64;

    #[test]
    fn decides_each_case() {
        let p = program();
        let eperm = RET_ERRNO | EPERM;
        assert_eq!(run(&p, X86, 0, 0), RET_ALLOW, "read");
        assert_eq!(run(&p, X86, 257, 0), RET_ALLOW, "openat");
        assert_eq!(run(&p, X86, 165, 0), eperm, "mount");
        assert_eq!(run(&p, X86, 308, 0), eperm, "setns");
        assert_eq!(run(&p, X86, 442, 0), eperm, "mount_setattr");
        assert_eq!(run(&p, X86, SYS_CLONE3, 0), RET_ERRNO | ENOSYS);
        // fork() and pthread_create's clone flags pass.
        assert_eq!(run(&p, X86, SYS_CLONE, 0x01200011), RET_ALLOW, "fork");
        assert_eq!(run(&p, X86, SYS_CLONE, 0x003d0f00), RET_ALLOW, "thread");
        assert_eq!(run(&p, X86, SYS_CLONE, 0x1000_0011), eperm, "clone NEWUSER");
        assert_eq!(run(&p, X86, SYS_CLONE, 0x0002_0011), eperm, "clone NEWNS");
        // clone's exit signal byte may look like CLONE_NEWTIME: allowed.
        assert_eq!(run(&p, X86, SYS_CLONE, 0x0000_0080 | 17), RET_ALLOW);
        assert_eq!(
            run(&p, X86, SYS_UNSHARE, 0x0000_0400),
            RET_ALLOW,
            "unshare(CLONE_FILES)"
        );
        assert_eq!(run(&p, X86, SYS_UNSHARE, 0x1002_0000), eperm, "unshare -Um");
        assert_eq!(run(&p, X86, SYS_UNSHARE, CLONE_NEWTIME), eperm, "unshare -T");
        assert_eq!(run(&p, X86, X32_SYSCALL_BIT | 165, 0), eperm, "x32");
        assert_eq!(run(&p, 0x4000_0003, 165, 0), RET_KILL_PROCESS, "i386");
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program();
        for (i, insn) in p.iter().enumerate() {
            if matches!(insn.code, JEQ_K | JGE_K | JSET_K) {
                assert!(i + 1 + usize::from(insn.jt.max(insn.jf)) < p.len());
            }
        }
        assert!(p.len() < 4096);
    }
}

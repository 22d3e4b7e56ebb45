//! The one process-level operation the safe APIs lack: dying by a signal
//! (so a caller's shell sees "killed by signal N", as it would have for the
//! agent itself).
#![allow(unsafe_code)]

/// Ends this process by signal `sig` (the agent's cause of death): restores
/// the default disposition, unblocks it, disables core dumps (the agent
/// already dumped if it was going to), and raises it. Signals whose default
/// action does not terminate fall through to `exit(128 + sig)`.
pub fn die_by_signal(sig: i32) -> ! {
    // SAFETY: setrlimit, signal, sigprocmask and raise are async-signal-safe
    // libc calls with valid arguments (a zeroed rlimit, SIG_DFL, a set built
    // by sigemptyset/sigaddset on a local). They change only this process's
    // own state, which is about to end.
    unsafe {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

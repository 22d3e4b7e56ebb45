//! The probe's raw system calls without a safe wrapper in std or nix:
//! seccomp(2) and landlock_create_ruleset(2). Each `unsafe` block passes
//! the kernel either null or a pointer to a live local that outlives the
//! call; nothing is retained by the kernel.
#![allow(unsafe_code)]

use std::io;

/// The three sizes `SECCOMP_GET_NOTIF_SIZES` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotifSizes {
    pub(crate) notif: u16,
    pub(crate) resp: u16,
    pub(crate) data: u16,
}

/// `seccomp(SECCOMP_GET_NOTIF_SIZES, 0, &sizes)`: succeeds only on kernels
/// with seccomp user notification (5.0+).
pub(crate) fn seccomp_notif_sizes() -> io::Result<NotifSizes> {
    let mut s = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: `s` is a live, writable `struct seccomp_notif_sizes` for the
    // duration of the call; the kernel writes exactly that struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0u32,
            std::ptr::addr_of_mut!(s),
        )
    };
    if r == 0 {
        Ok(NotifSizes {
            notif: s.seccomp_notif,
            resp: s.seccomp_notif_resp,
            data: s.seccomp_data,
        })
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL, 0, &SECCOMP_RET_USER_NOTIF)`.
pub(crate) fn seccomp_user_notif_action_available() -> io::Result<()> {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: `action` is a live u32 the kernel only reads during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0u32,
            std::ptr::addr_of!(action),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`:
/// the Landlock ABI version; creates nothing.
pub(crate) fn landlock_abi() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: a null attribute pointer with size 0 is the documented way to
    // ask for the ABI version; no memory is passed to the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r >= 0 {
        Ok(u32::try_from(r).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

//! The BPF objects compiled by build.rs from `bpf/*.bpf.c`, embedded.

/// Aligned storage for an embedded object (the ELF parser reads u64s).
#[repr(C, align(8))]
pub struct Aligned<B: ?Sized> {
    /// The bytes.
    pub bytes: B,
}

macro_rules! object {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub static $name: &Aligned<[u8]> = &Aligned {
            bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/", $file)),
        };
    };
}

object!(
    NET,
    "net.bpf.o",
    "cgroup connect4/6 and sendmsg4/6: the network table."
);
object!(
    PROBE,
    "probe.bpf.o",
    "no-op programs `corral doctor` loads and attaches to find the usable layers."
);
object!(
    TRACE,
    "trace.bpf.o",
    "Telemetry: exec with argv, fork, exit; open flags for the fanotify fallback."
);
object!(
    LSM,
    "lsm.bpf.o",
    "BPF LSM: file_open, bprm_check_security, mmap_file: the path tables."
);

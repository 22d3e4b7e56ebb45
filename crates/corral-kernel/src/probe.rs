//! Capability probe for `corral doctor` (being written).

//! corral's policy engine: the Cedar schema, loading and strict validation
//! with file:line:col diagnostics, request building (paths and hosts as
//! entity hierarchies), the plan compiler that turns a policy set into the
//! tables each enforcement layer loads, and explain.
//!
//! This crate does no IO beyond reading the policy files it is given: it
//! opens no sockets and touches no kernel (STYLE.md: policy model without IO).

#![deny(missing_docs)]

pub mod analyze;
pub mod check;
pub mod default_policy;
pub mod diag;
pub mod eval;
pub mod explain;
pub(crate) mod lint;
pub mod load;
pub mod plan;
pub mod request;
pub mod schema;
pub mod source;
pub mod suggest;

pub use check::{check, Checked};
pub use diag::{Diagnostic, Severity};
pub use eval::{Decision, Evaluator};
pub use load::{load, load_files, PolicyDoc, PolicyHit, PolicyInfo};
pub use plan::{compile, CompileOptions, Plan, Verdict};
pub use request::{Protocol, Request};
pub use schema::{Action, SCHEMA_TEXT};
pub use source::Source;

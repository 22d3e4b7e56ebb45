//! `check`: load, validate, compile and lint in one step, collecting every
//! diagnostic. This is what `corral policy check` and `corral run` call.

use crate::diag::Diagnostic;
use crate::load::{load, PolicyDoc};
use crate::plan::{compile, CompileOptions, Plan, Verdict};
use crate::source::Source;

/// The result of checking a policy set.
#[derive(Debug)]
pub struct Checked {
    /// The loaded document (when it loaded).
    pub doc: Option<PolicyDoc>,
    /// The plan (when it compiled).
    pub plan: Option<Plan>,
    /// Every error and warning, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// True when there is no error.
    pub fn ok(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads, compiles and lints.
pub fn check(sources: Vec<Source>) -> Checked {
    let doc = match load(sources) {
        Ok(d) => d,
        Err(diags) => {
            return Checked {
                doc: None,
                plan: None,
                diagnostics: sorted(diags),
            }
        }
    };
    let mut diags = doc.warnings.clone();
    let plan = match compile(&doc, &CompileOptions::default()) {
        Ok(p) => p,
        Err(mut d) => {
            diags.append(&mut d);
            return Checked {
                doc: Some(doc),
                plan: None,
                diagnostics: sorted(diags),
            };
        }
    };
    diags.extend(plan.warnings.iter().cloned());
    diags.extend(shadowed_permits(&doc, &plan));
    Checked {
        doc: Some(doc),
        plan: Some(plan),
        diagnostics: sorted(diags),
    }
}

fn sorted(mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
    d.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    d
}

/// Permits on kernel-layer actions that some class would satisfy, but that
/// never allow anything in the full set: forbids veto them everywhere.
fn shadowed_permits(doc: &PolicyDoc, plan: &Plan) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if doc.policies.len() > 400 {
        // Quadratic; large generated sets are checked by their generator.
        return out;
    }
    let mut allows = vec![false; doc.policies.len()];
    let mut mark = |v: &Verdict| match v {
        Verdict::Allow { by } => by.iter().for_each(|i| {
            if let Some(a) = allows.get_mut(*i) {
                *a = true
            }
        }),
        Verdict::Userspace { policies } => policies.iter().for_each(|i| {
            if let Some(a) = allows.get_mut(*i) {
                *a = true
            }
        }),
        Verdict::Deny { .. } => {}
    };
    for p in &plan.principals {
        for t in [&p.file_read, &p.file_write, &p.exec] {
            t.entries.values().flat_map(|e| e.verdicts()).for_each(&mut mark);
        }
        for t in &p.net {
            t.entries
                .iter()
                .flat_map(|e| e.verdicts.iter().flatten())
                .for_each(&mut mark);
        }
    }
    for (i, info) in doc.policies.iter().enumerate() {
        let Some(facts) = doc.facts(i) else { continue };
        use crate::schema::Action::*;
        let kernel_only = !facts.actions.is_empty()
            && facts.actions.iter().all(|a| {
                matches!(
                    a,
                    FileOpenReadOnly | FileOpenReadWrite | ProcessExec | NetworkConnect
                )
            });
        if info.is_forbid() || !kernel_only || allows.get(i).copied().unwrap_or(true) {
            continue;
        }
        // Does the permit alone allow anything? Then forbids shadow it.
        let Ok(alone) = load(vec![Source::new(info.file.clone(), info.text.clone())]) else {
            continue;
        };
        let Ok(alone_plan) = compile(&alone, &CompileOptions::default()) else {
            continue;
        };
        let satisfiable = alone_plan.principals.iter().any(|p| {
            [&p.file_read, &p.file_write, &p.exec].iter().any(|t| {
                t.entries
                    .values()
                    .flat_map(|e| e.verdicts())
                    .any(|v| v.allowed() != Some(false))
            }) || p.net.iter().any(|t| {
                t.entries
                    .iter()
                    .flat_map(|e| e.verdicts.iter().flatten())
                    .any(|v| v.allowed() != Some(false))
            })
        });
        if satisfiable {
            let mut d = Diagnostic::warning(
                "shadowed-permit",
                format!(
                    "permit `{}` never allows anything: a `forbid` matches every request it matches",
                    info.id
                ),
            )
            .policy(info.id.clone())
            .help("narrow the forbid (`unless { ... }`) or remove this permit");
            if let Some(src) = doc.source_of(info) {
                d = d.at(
                    src,
                    info.start + crate::source::effect_offset(&info.text),
                    "permit".len(),
                );
            }
            out.push(d);
        }
    }
    out
}

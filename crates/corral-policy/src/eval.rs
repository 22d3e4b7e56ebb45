//! Userspace decisions with the real Cedar authorizer, over per-action
//! slices of the policy set (a policy whose scope cannot apply to an action
//! is never evaluated for it; Cedar's semantics are per-policy, so slicing
//! changes no decision — the differential tests check this).

use crate::analyze::Facts;
use crate::load::PolicyDoc;
use crate::request::{Request, RequestError};
use crate::schema::Action;
use cedar_policy::{Authorizer, PolicySet};
use std::collections::HashMap;

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allowed?
    pub allowed: bool,
    /// Indices (into [`PolicyDoc::policies`]) of the determining policies:
    /// satisfied permits when allowed, satisfied forbids when denied
    /// (empty: denied by default, nothing permits).
    pub determining: Vec<usize>,
    /// Policies that raised an evaluation error (Cedar skips them).
    pub errors: Vec<String>,
}

/// Evaluates requests against a loaded policy document.
#[derive(Debug, Clone)]
pub struct Evaluator {
    slices: HashMap<Action, PolicySet>,
    index: HashMap<String, usize>,
    authorizer: Authorizer,
}

impl Evaluator {
    /// Slices the document by action.
    pub fn new(doc: &PolicyDoc) -> Evaluator {
        let mut slices: HashMap<Action, PolicySet> = HashMap::new();
        let mut index = HashMap::new();
        for (i, info) in doc.policies.iter().enumerate() {
            index.insert(info.id.clone(), i);
            let Some(p) = doc.policy(i) else { continue };
            for a in Facts::of(p).actions {
                // Ids are unique in a loaded document, so `add` cannot fail.
                let _ = slices.entry(a).or_default().add(p.clone());
            }
        }
        Evaluator {
            slices,
            index,
            authorizer: Authorizer::new(),
        }
    }

    /// The policies that can apply to an action.
    pub fn slice(&self, action: Action) -> Option<&PolicySet> {
        self.slices.get(&action)
    }

    /// Decides a request.
    pub fn decide(&self, req: &Request) -> Result<Decision, RequestError> {
        let Some(set) = self.slices.get(&req.action()) else {
            return Ok(Decision {
                allowed: false,
                determining: vec![],
                errors: vec![],
            });
        };
        let (r, e) = req.to_cedar()?;
        let resp = self.authorizer.is_authorized(&r, set, &e);
        let mut determining: Vec<usize> = resp
            .diagnostics()
            .reason()
            .filter_map(|id| self.index.get(AsRef::<str>::as_ref(id)).copied())
            .collect();
        determining.sort_unstable();
        Ok(Decision {
            allowed: resp.decision() == cedar_policy::Decision::Allow,
            determining,
            errors: resp.diagnostics().errors().map(|e| e.to_string()).collect(),
        })
    }

    /// Index of a policy id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

//! A rule form's condition, compiled when loaded or at its first use.
//!
//! A form that came from the compiled-rule cache is filed in the index with the keys and
//! needles the cache holds; its detection stays JSON text (a range of the cache file's
//! text, shared by every such form) until the first event that reaches the form as a
//! candidate. Hunts evaluate on every core: the first thread to ask compiles, any other
//! asking meanwhile waits for it (`OnceLock`).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::compile::Cond;

/// A rule form's condition.
pub(crate) enum FormCond {
    /// Compiled when the rule was loaded.
    Ready(Cond),
    /// Compiled at first use.
    Deferred(Box<Deferred>),
}

/// A detection kept as JSON text until it is needed.
pub(crate) struct Deferred {
    /// The text holding the detection (the cache file's) and where.
    text: Arc<String>,
    range: Range<usize>,
    /// Which of the rule's logsource targets the form is for.
    target: usize,
    cond: OnceLock<Cond>,
}

impl FormCond {
    /// A form whose detection is `text[range]`, for the rule's target `target`.
    pub(crate) fn deferred(text: Arc<String>, range: Range<usize>, target: usize) -> FormCond {
        FormCond::Deferred(Box::new(Deferred {
            text,
            range,
            target,
            cond: OnceLock::new(),
        }))
    }

    /// The condition; a deferred one is compiled by `compile(detection JSON, target)` the
    /// first time it is asked for.
    pub(crate) fn get(&self, compile: impl FnOnce(&str, usize) -> Cond) -> &Cond {
        match self {
            FormCond::Ready(c) => c,
            FormCond::Deferred(d) => d
                .cond
                .get_or_init(|| compile(d.text.get(d.range.clone()).unwrap_or(""), d.target)),
        }
    }

    /// The condition, compiled now if it was not yet.
    pub(crate) fn into_cond(self, compile: impl FnOnce(&str, usize) -> Cond) -> Cond {
        match self {
            FormCond::Ready(c) => c,
            FormCond::Deferred(d) => {
                let Deferred {
                    text,
                    range,
                    target,
                    cond,
                } = *d;
                cond.into_inner()
                    .unwrap_or_else(|| compile(text.get(range).unwrap_or(""), target))
            }
        }
    }

    /// Whether it waits for its first use.
    pub(crate) fn is_deferred(&self) -> bool {
        matches!(self, FormCond::Deferred(d) if d.cond.get().is_none())
    }
}

//! Retry policies: a workflow's and a step's are compiled alike.

use super::doc::{Doc, at};
use super::model::RetryPolicy;
use super::raw::RawRetry;
use super::yaml::Target;

/// Compiles a retry policy.
pub fn compile_retry(doc: &mut Doc<'_>, raw: RawRetry, ptr: &[String]) -> RetryPolicy {
    let RawRetry {
        max_attempts,
        backoff,
        multiplier,
        max_backoff,
        non_retryable_exit_codes,
    } = raw;
    let defaults = RetryPolicy::default();
    if max_attempts == 0 {
        doc.error(
            &at(ptr, &[&"max_attempts"]),
            Target::Value,
            "`max_attempts` must be at least 1",
        );
    }
    let multiplier = multiplier.unwrap_or(defaults.multiplier);
    if !(multiplier.is_finite() && multiplier >= 1.0) {
        doc.error(
            &at(ptr, &[&"multiplier"]),
            Target::Value,
            "`multiplier` must be at least 1",
        );
    }
    let backoff = doc.duration(backoff.as_deref(), at(ptr, &[&"backoff"]), defaults.backoff);
    let max_backoff = doc.duration(
        max_backoff.as_deref(),
        at(ptr, &[&"max_backoff"]),
        defaults.max_backoff.max(backoff),
    );
    if max_backoff < backoff {
        doc.error(
            &at(ptr, &[&"max_backoff"]),
            Target::Value,
            "`max_backoff` is shorter than `backoff`",
        );
    }
    RetryPolicy {
        max_attempts: max_attempts.max(1),
        backoff,
        multiplier,
        max_backoff,
        non_retryable_exit_codes,
    }
}

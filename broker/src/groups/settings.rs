//! Checking a join's group settings, and what the settings imply: the
//! compiled tag filter, the retry ladder, a readable difference.

use std::time::Duration;

use super::tag_expr::TagExpr;
use sluice_protocol::ops::GroupSettings;

use super::{GroupError, Result};
use crate::log::validate_topic_name;
use crate::sched::RetryLadder;

/// Longest group name: its retry and dead-letter topics must still be
/// valid topic names.
const MAX_GROUP_NAME: usize = 200;

pub(super) fn validate_group_name(name: &str) -> Result<()> {
    if name.len() > MAX_GROUP_NAME {
        return Err(GroupError::Invalid(format!(
            "group name is {} characters long; the limit is {MAX_GROUP_NAME}",
            name.len()
        )));
    }
    validate_topic_name(name).map_err(|_| {
        GroupError::Invalid(format!(
            "invalid group name {name:?}: use 1 to {MAX_GROUP_NAME} ASCII letters, digits, '.', '_' and '-'"
        ))
    })
}

pub(super) fn compile_filter(src: &str) -> Result<Option<TagExpr>> {
    let e =
        TagExpr::parse(src).map_err(|e| GroupError::Invalid(format!("tag filter {src:?}: {e}")))?;
    Ok((!e.matches_all()).then_some(e))
}

pub(super) fn ladder_of(s: &GroupSettings) -> RetryLadder {
    RetryLadder::new(
        s.retry_ladder_ms
            .iter()
            .map(|ms| Duration::from_millis((*ms).into()))
            .collect(),
    )
    .unwrap_or_default()
}

/// Checks a join's settings and puts them in the form they are compared
/// and stored in (the filter's normalised text).
pub(super) fn normalise(mut s: GroupSettings) -> Result<GroupSettings> {
    let invalid = |m: String| Err(GroupError::Invalid(m));
    if s.max_attempts == 0 {
        return invalid("max_attempts must be at least 1".into());
    }
    if s.ack_timeout_ms < 10 {
        return invalid(format!(
            "ack timeout of {} ms is too short; at least 10 ms",
            s.ack_timeout_ms
        ));
    }
    if s.max_in_flight == 0 || s.max_in_flight > 1_000_000 {
        return invalid(format!(
            "max_in_flight must be 1 to 1000000, not {}",
            s.max_in_flight
        ));
    }
    if s.retry_ladder_ms.len() > 64 {
        return invalid("a retry ladder has at most 64 steps".into());
    }
    s.tag_filter = match TagExpr::parse(&s.tag_filter) {
        Ok(e) if e.matches_all() => String::new(),
        Ok(e) => e.source().to_owned(),
        Err(e) => return invalid(format!("tag filter {:?}: {e}", s.tag_filter)),
    };
    Ok(s)
}

pub(super) fn settings_diff(a: &GroupSettings, b: &GroupSettings) -> String {
    let mut d = Vec::new();
    if a.topic != b.topic {
        d.push(format!("topic {:?} vs {:?}", a.topic, b.topic));
    }
    if a.mode != b.mode {
        d.push(format!("mode {} vs {}", a.mode, b.mode));
    }
    if a.ordered != b.ordered {
        d.push(format!("ordered {} vs {}", a.ordered, b.ordered));
    }
    if a.tag_filter != b.tag_filter {
        d.push(format!(
            "tag filter {:?} vs {:?}",
            a.tag_filter, b.tag_filter
        ));
    }
    if a.start != b.start {
        d.push(format!("start {:?} vs {:?}", a.start, b.start));
    }
    if a.ack_timeout_ms != b.ack_timeout_ms {
        d.push(format!(
            "ack timeout {} vs {} ms",
            a.ack_timeout_ms, b.ack_timeout_ms
        ));
    }
    if a.max_attempts != b.max_attempts {
        d.push(format!(
            "max attempts {} vs {}",
            a.max_attempts, b.max_attempts
        ));
    }
    if a.retry_ladder_ms != b.retry_ladder_ms {
        d.push(format!(
            "retry ladder {:?} vs {:?}",
            a.retry_ladder_ms, b.retry_ladder_ms
        ));
    }
    if a.max_in_flight != b.max_in_flight {
        d.push(format!(
            "max in flight {} vs {}",
            a.max_in_flight, b.max_in_flight
        ));
    }
    format!("live: {}", d.join(", "))
}

/// Longest member instance id: `<group>/<instance>` names its stored
/// offsets and must fit a metadata key.
const MAX_INSTANCE_ID: usize = 40;

pub(super) fn validate_instance_id(id: &str) -> Result<()> {
    if id.len() > MAX_INSTANCE_ID || id.contains('/') {
        return Err(GroupError::Invalid(format!(
            "instance id {id:?} must be at most {MAX_INSTANCE_ID} bytes without '/'"
        )));
    }
    Ok(())
}

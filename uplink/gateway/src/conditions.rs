//! Conditional requests as plain code: `If-Match`, `If-None-Match`, `If-Modified-Since`
//! and `If-Unmodified-Since` on GET and HEAD (RFC 9110 §13.2.2, as the S3 API reference
//! describes them), and the `x-amz-copy-source-if-*` headers of a copy.

/// An entity tag condition: a list of tags, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    Any,
    /// Tag values without quotes (weak tags compare by value, as S3 does).
    Tags(Vec<String>),
}

impl TagCondition {
    fn matches(&self, etag: &str) -> bool {
        match self {
            TagCondition::Any => true,
            TagCondition::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The conditions of one request. Times are unix seconds (HTTP dates have no finer
/// resolution).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<TagCondition>,
    pub if_none_match: Option<TagCondition>,
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

/// What a request's conditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 304 Not Modified (GET and HEAD only).
    NotModified,
}

/// Evaluates GET/HEAD conditions against an object's ETag (unquoted) and last
/// modification (unix seconds), in the RFC's order: If-Match, else If-Unmodified-Since;
/// then If-None-Match, else If-Modified-Since.
pub fn evaluate_read(c: &Conditions, etag: &str, modified_s: i64) -> Outcome {
    match &c.if_match {
        Some(m) if !m.matches(etag) => return Outcome::PreconditionFailed,
        Some(_) => {}
        None => {
            if c.if_unmodified_since.is_some_and(|t| modified_s > t) {
                return Outcome::PreconditionFailed;
            }
        }
    }
    match &c.if_none_match {
        Some(m) if m.matches(etag) => return Outcome::NotModified,
        Some(_) => {}
        None => {
            if c.if_modified_since.is_some_and(|t| modified_s <= t) {
                return Outcome::NotModified;
            }
        }
    }
    Outcome::Proceed
}

/// Evaluates the `x-amz-copy-source-if-*` conditions: every failure is a 412.
pub fn evaluate_copy_source(c: &Conditions, etag: &str, modified_s: i64) -> Outcome {
    match evaluate_read(c, etag, modified_s) {
        Outcome::Proceed => Outcome::Proceed,
        Outcome::PreconditionFailed | Outcome::NotModified => Outcome::PreconditionFailed,
    }
}

/// Evaluates the conditions of a write (PutObject, CompleteMultipartUpload):
/// `If-None-Match: *` fails when the key exists, `If-Match` when it is missing or its
/// ETag differs.
pub fn evaluate_write(c: &Conditions, current_etag: Option<&str>) -> Outcome {
    if let Some(m) = &c.if_none_match
        && let Some(etag) = current_etag
        && m.matches(etag)
    {
        return Outcome::PreconditionFailed;
    }
    if let Some(m) = &c.if_match {
        match current_etag {
            Some(etag) if m.matches(etag) => {}
            _ => return Outcome::PreconditionFailed,
        }
    }
    Outcome::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Option<TagCondition> {
        Some(TagCondition::Tags(
            t.iter().map(|s| s.to_string()).collect(),
        ))
    }

    #[test]
    fn read_conditions_follow_the_rfc_order() {
        let etag = "abc";
        let t = 1_000;
        let none = Conditions::default();
        assert_eq!(evaluate_read(&none, etag, t), Outcome::Proceed);
        let c = Conditions {
            if_match: tags(&["x"]),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::PreconditionFailed);
        // If-Match true wins over a failing If-Unmodified-Since (the S3 reference).
        let c = Conditions {
            if_match: tags(&["x", "abc"]),
            if_unmodified_since: Some(t - 1),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::Proceed);
        let c = Conditions {
            if_unmodified_since: Some(t - 1),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::PreconditionFailed);
        let c = Conditions {
            if_none_match: Some(TagCondition::Any),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::NotModified);
        // If-None-Match false (tags differ) makes If-Modified-Since irrelevant.
        let c = Conditions {
            if_none_match: tags(&["x"]),
            if_modified_since: Some(t + 10),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::Proceed);
        let c = Conditions {
            if_modified_since: Some(t),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::NotModified);
        let c = Conditions {
            if_modified_since: Some(t - 1),
            ..Default::default()
        };
        assert_eq!(evaluate_read(&c, etag, t), Outcome::Proceed);
    }

    #[test]
    fn copy_source_conditions_fail_with_412() {
        let c = Conditions {
            if_none_match: tags(&["abc"]),
            ..Default::default()
        };
        assert_eq!(
            evaluate_copy_source(&c, "abc", 5),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn write_conditions() {
        let star = Conditions {
            if_none_match: Some(TagCondition::Any),
            ..Default::default()
        };
        assert_eq!(evaluate_write(&star, None), Outcome::Proceed);
        assert_eq!(
            evaluate_write(&star, Some("a")),
            Outcome::PreconditionFailed
        );
        let m = Conditions {
            if_match: tags(&["a"]),
            ..Default::default()
        };
        assert_eq!(evaluate_write(&m, Some("a")), Outcome::Proceed);
        assert_eq!(evaluate_write(&m, Some("b")), Outcome::PreconditionFailed);
        assert_eq!(evaluate_write(&m, None), Outcome::PreconditionFailed);
    }
}

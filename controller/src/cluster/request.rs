//! The `weir.dev/request` annotation the CLI writes: `<verb>@<RFC 3339 time>`. Pure.

use crate::status::{UserRequest, Verb};

/// The annotation's key.
pub const ANNOTATION: &str = "weir.dev/request";

/// The annotation's value for `verb` asked at `at` (RFC 3339 with sub-second digits, so two
/// requests in one second differ).
pub fn format(verb: Verb, at: &str) -> String {
    format!("{}@{at}", verb.as_str())
}

/// The request an annotation value holds, or why it holds none.
pub fn parse(value: &str) -> Result<UserRequest, String> {
    let (verb, at) = value
        .split_once('@')
        .ok_or_else(|| format!("{value:?} is not <verb>@<time>"))?;
    let verb = match verb {
        "pause" => Verb::Pause,
        "resume" => Verb::Resume,
        "promote" => Verb::Promote,
        "abort" => Verb::Abort,
        "retry" => Verb::Retry,
        other => return Err(format!("{other:?} is not one of pause, resume, promote, abort, retry")),
    };
    at.parse::<k8s_openapi::jiff::Timestamp>()
        .map_err(|e| format!("{at:?} is not an RFC 3339 time: {e}"))?;
    Ok(UserRequest {
        verb,
        at: at.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_bad_ones_say_why() {
        let value = format(Verb::Abort, "2026-12-02T10:00:00.123456Z");
        assert_eq!(
            parse(&value),
            Ok(UserRequest {
                verb: Verb::Abort,
                at: "2026-12-02T10:00:00.123456Z".into()
            })
        );
        assert!(parse("abort").unwrap_err().contains("<verb>@<time>"));
        assert!(parse("explode@2026-12-02T10:00:00Z").unwrap_err().contains("explode"));
        assert!(parse("abort@yesterday").unwrap_err().contains("RFC 3339"));
    }
}

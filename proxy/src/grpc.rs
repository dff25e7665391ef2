//! gRPC over the proxy: recognising calls, their deadlines and their outcomes. Pure functions
//! over headers; no I/O.

use std::time::Duration;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

use crate::metrics::CodeClass;

/// `grpc-status` codes that count as errors of the side that returned them: UNKNOWN,
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS. The others
/// (NOT_FOUND, INVALID_ARGUMENT, ...) are the caller's business, like HTTP 4xx.
const ERROR_CODES: [u32; 6] = [2, 4, 8, 13, 14, 15];

/// gRPC status codes the proxy itself answers with.
pub mod code {
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// No such method (the proxy has no route).
    pub const UNIMPLEMENTED: u32 = 12;
    /// The request is malformed.
    pub const INVALID_ARGUMENT: u32 = 3;
    /// The service is unreachable.
    pub const UNAVAILABLE: u32 = 14;
}

/// Whether a message is gRPC, by its content type: `application/grpc`, alone or followed by
/// `+format` or `;parameters`. gRPC-Web (`application/grpc-web...`) is not: its status is in
/// the body, and it is counted as HTTP.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

/// The `grpc-status` in `headers` (trailers, or the headers of a trailers-only answer).
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// The class a gRPC outcome counts as: `grpc_error` for the error codes, else 2xx.
pub fn classify(status: u32) -> CodeClass {
    if ERROR_CODES.contains(&status) {
        CodeClass::GrpcError
    } else {
        CodeClass::Success
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a gRPC call asks for, if any.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_timeout(headers.get("grpc-timeout")?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn timeouts_parse_in_every_unit() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout(b"123456789S"), None, "more than 8 digits");
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b""), None);
    }

    #[test]
    fn only_server_side_codes_are_errors() {
        for code in [2, 4, 8, 13, 14, 15] {
            assert_eq!(classify(code), CodeClass::GrpcError, "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 9, 10, 11, 12, 16] {
            assert_eq!(classify(code), CodeClass::Success, "{code}");
        }
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(is_grpc(&h));
        assert_eq!(status(&h), Some(14));
        for (content_type, grpc) in [
            ("application/grpc", true),
            ("application/grpc;charset=utf-8", true),
            // gRPC-Web carries its status in the body, not in trailers: read as gRPC, every
            // answer would lack its trailers and count as an error, and trip fail-fast.
            ("application/grpc-web", false),
            ("application/grpc-web-text+proto", false),
            ("application/grpcx", false),
            ("text/html", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            assert_eq!(is_grpc(&h), grpc, "{content_type}");
        }
    }
}

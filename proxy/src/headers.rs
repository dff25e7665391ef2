//! Header hygiene for both directions: hop-by-hop headers out, forwarding headers in.
//! Pure functions over header maps; nothing here allocates unless a header must be joined.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Headers in which a proxy tells its upstream about the client. Only a trusted peer may
/// send them: from anyone else they are claims the client made about itself.
const CLIENT_CLAIMS: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    HeaderName::from_static("x-forwarded-host"),
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
];

/// Removes hop-by-hop headers and any header the `Connection` header names. `TE: trailers`
/// survives on requests: it is end to end in practice, and gRPC servers require it. A
/// message that came with `Transfer-Encoding` loses its `Content-Length` too: the transfer
/// coding framed it (RFC 9112 section 6.3), the length is not the length of what is passed on,
/// and a peer that believed it would read the wrong bytes as the body.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::TE {
                headers.remove(name);
            }
        }
    }
    let te_trailers = headers.get(header::TE).is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `Via` entry this proxy adds for a message received over `version`.
pub fn via(version: Version) -> HeaderValue {
    match version {
        Version::HTTP_2 => HeaderValue::from_static("2 weir"),
        Version::HTTP_10 => HeaderValue::from_static("1.0 weir"),
        _ => HeaderValue::from_static("1.1 weir"),
    }
}

/// Adds the client's address to `x-forwarded-for` (joining onto an existing value, so
/// upstreams that read only one line see the whole chain), sets `x-forwarded-proto` unless
/// a proxy before us set it, and appends our `Via` entry. From a client that is not a
/// `trusted` proxy, the forwarding headers it sent are dropped first: it could otherwise pass
/// for any address, or for HTTPS over plain text.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    version: Version,
    trusted: bool,
) {
    if !trusted {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
    match headers.get(&X_FORWARDED_FOR) {
        None => {
            headers.insert(X_FORWARDED_FOR, client.clone());
        }
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + client.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    headers.append(header::VIA, via(version));
}

/// Bytes of header names and values, the measure the header size limit applies to.
pub fn size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn a_length_beside_a_transfer_coding_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::CONTENT_LENGTH], "3", "a length alone is the length");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).map(HeaderValue::as_bytes), Some(&b"trailers"[..]));
    }

    #[test]
    fn forwarding_headers_join_existing_chains() {
        let client = HeaderValue::from_static("10.1.2.3");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &client, "http", Version::HTTP_11, false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::VIA], "1.1 weir");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge"));
        add_forwarding(&mut h, &client, "http", Version::HTTP_2, true);
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.1, 10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        let via: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.1 edge", "2 weir"]);
    }

    #[test]
    fn an_untrusted_clients_forwarding_claims_are_replaced() {
        let client = HeaderValue::from_static("10.1.2.3");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("admin.internal"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.1.1.1;proto=https"));
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        add_forwarding(&mut h, &client, "http", Version::HTTP_11, false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        for gone in ["x-forwarded-host", "forwarded", "x-real-ip"] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
    }
}

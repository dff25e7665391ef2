//! The README's routing and splitting rules, written from its text rather than from the code,
//! as the oracle the target checks the proxy against.

use weir_proxy::split::Side;

/// A route as the model sees it.
pub(crate) struct ModelRoute {
    pub(crate) name: String,
    /// `None`: any host; `Some((true, s))`: suffix `s` (with its dot); `Some((false, h))`: exact.
    pub(crate) host: Option<(bool, String)>,
    pub(crate) prefix: String,
    pub(crate) has_candidate: bool,
    pub(crate) weight: u16,
    pub(crate) overrides: Vec<(Key, String, Side)>,
    pub(crate) sticky: Option<Key>,
    /// Any host written as `host: "*"` rather than left out.
    pub(crate) star: bool,
    pub(crate) fail_fast: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Key {
    Header(String),
    Cookie(String),
}

/// The route the README's precedence names, by index.
pub(crate) fn expected_route(routes: &[ModelRoute], host: &str, path: &str) -> Option<usize> {
    let host = normalise_host(host);
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| prefix_matches(&r.prefix, path))
        .filter_map(|(i, r)| {
            let rank = match &r.host {
                None => (0, 0),
                Some((true, suffix)) if host.len() > suffix.len() && host.ends_with(suffix.as_str()) => {
                    (1, suffix.len())
                }
                Some((false, exact)) if host == *exact => (2, 0),
                Some(_) => return None,
            };
            // Ties cannot happen between valid routes: equal host and equal-length matching
            // prefixes are one match, which validation refuses twice.
            Some(((rank, r.prefix.len()), i))
        })
        .max_by_key(|(key, i)| (*key, std::cmp::Reverse(*i)))
        .map(|(_, i)| i)
}

/// `Host` to the name routes match: without a port, lowercase.
pub(crate) fn normalise_host(host: &str) -> String {
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare.to_ascii_lowercase()
}

/// `/api` matches `/api` and `/api/v1`, not `/apix`; a prefix ending in `/` matches what it
/// starts.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
}

/// The first value of `key` in the request, as the README has it: a header's first value, or
/// a cookie's value (trimmed, quotes dropped) from the first `Cookie` header that has it.
pub(crate) fn find_key(key: &Key, headers: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    match key {
        Key::Header(name) => headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
        Key::Cookie(name) => headers.iter().filter(|(n, _)| n == "cookie").find_map(|(_, value)| {
            value.split(|b| *b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|b| *b == b'=')?;
                if pair[..eq].trim_ascii() != name.as_bytes() {
                    return None;
                }
                let v = pair[eq + 1..].trim_ascii();
                Some(match v {
                    [b'"', inner @ .., b'"'] => inner.to_vec(),
                    _ => v.to_vec(),
                })
            })
        }),
    }
}

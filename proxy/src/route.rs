//! Finds the route of a request from its host and path. Pure: no I/O, no allocation per lookup.
//!
//! Precedence: an exact host beats the longest matching `*.suffix`, which beats a route with no
//! host; within the chosen host, the longest matching path prefix wins. Prefixes match whole
//! path segments: `/api` matches `/api` and `/api/v1` but not `/apix`.

use std::collections::HashMap;

/// How a route matches the request's host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Any host.
    Any,
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot: `*.models.svc` is `.models.svc`.
    Suffix(String),
}

impl HostMatch {
    /// Parses the config form: absent or `*` is any host, `*.a.b` a suffix, else exact.
    pub fn parse(host: Option<&str>) -> HostMatch {
        match host.map(str::to_ascii_lowercase) {
            None => HostMatch::Any,
            Some(h) if h == "*" => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            },
        }
    }
}

/// Routes indexed for lookup; `T` is whatever the caller wants back (an index into its routes).
#[derive(Debug)]
pub struct RouteIndex<T> {
    exact: HashMap<String, Vec<(String, T)>>,
    /// Longest suffix first.
    suffixes: Vec<(String, Vec<(String, T)>)>,
    any: Vec<(String, T)>,
}

impl<T: Copy> RouteIndex<T> {
    /// Builds the index from `(host, path prefix, value)`. Duplicate `(host, prefix)` pairs are
    /// the validator's business; here the first one wins.
    pub fn new(routes: impl IntoIterator<Item = (HostMatch, String, T)>) -> Self {
        let mut exact: HashMap<String, Vec<(String, T)>> = HashMap::new();
        let mut suffixes: Vec<(String, Vec<(String, T)>)> = Vec::new();
        let mut any = Vec::new();
        for (host, prefix, value) in routes {
            let list = match host {
                HostMatch::Any => &mut any,
                HostMatch::Exact(h) => exact.entry(h).or_default(),
                HostMatch::Suffix(s) => match suffixes.iter().position(|(k, _)| *k == s) {
                    Some(i) => &mut suffixes[i].1,
                    None => {
                        suffixes.push((s, Vec::new()));
                        &mut suffixes.last_mut().expect("just pushed").1
                    }
                },
            };
            list.push((prefix, value));
        }
        // Stable sorts keep config order among equal lengths, so "first one wins" holds.
        let by_longest = |list: &mut Vec<(String, T)>| list.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        exact.values_mut().for_each(by_longest);
        suffixes.iter_mut().for_each(|(_, list)| by_longest(list));
        by_longest(&mut any);
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        RouteIndex { exact, suffixes, any }
    }

    /// The route for a request to `host` (may carry a port, any case) and `path`.
    ///
    /// A host with routes but no matching prefix falls through to wildcard and host-less
    /// routes, so a catch-all `/` route keeps working beside host-specific ones.
    pub fn find(&self, host: &str, path: &str) -> Option<T> {
        let host = strip_port(host);
        // Hosts are matched in lowercase: on the stack for any real host name (at most 253
        // bytes), on the heap for a longer one, which still matches as any other would.
        let mut lower = [0u8; 256];
        let heap: String;
        let host = if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            host
        } else if host.len() <= lower.len() {
            let buf = &mut lower[..host.len()];
            buf.copy_from_slice(host.as_bytes());
            buf.make_ascii_lowercase();
            std::str::from_utf8(buf).expect("ASCII lowercasing keeps UTF-8 valid")
        } else {
            heap = host.to_ascii_lowercase();
            &heap
        };
        if let Some(found) = self.exact.get(host).and_then(|list| longest_prefix(list, path)) {
            return Some(found);
        }
        self.suffixes
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .find_map(|(_, list)| longest_prefix(list, path))
            .or_else(|| longest_prefix(&self.any, path))
    }
}

fn longest_prefix<T: Copy>(list: &[(String, T)], path: &str) -> Option<T> {
    list.iter()
        .find(|(prefix, _)| prefix_matches(prefix, path))
        .map(|(_, v)| *v)
}

/// Whether `prefix` matches `path` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
    }
}

/// `host:port` to `host`, leaving IPv6 literals (`[::1]:80`) as `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> RouteIndex<u8> {
        RouteIndex::new([
            (HostMatch::Any, "/".to_string(), 0),
            (HostMatch::parse(Some("API.example.com")), "/".to_string(), 1),
            (HostMatch::parse(Some("api.example.com")), "/v2".to_string(), 2),
            (HostMatch::parse(Some("*.example.com")), "/".to_string(), 3),
            (HostMatch::parse(Some("*.eu.example.com")), "/".to_string(), 4),
            (HostMatch::Any, "/static/".to_string(), 5),
        ])
    }

    #[test]
    fn hosts_longer_than_the_lowercase_buffer_still_match_case_insensitively() {
        // Found by the route fuzz target: a long host in capitals missed its wildcard route.
        let idx = index();
        let long = format!("{}.EXAMPLE.COM", "A".repeat(300));
        assert_eq!(idx.find(&long, "/"), Some(3));
        assert_eq!(idx.find(&format!("{long}:8080"), "/"), Some(3));
    }

    #[test]
    fn exact_host_and_longest_prefix_win() {
        let idx = index();
        assert_eq!(idx.find("api.example.com", "/v2/models"), Some(2));
        assert_eq!(idx.find("api.example.com", "/v2"), Some(2));
        assert_eq!(idx.find("api.example.com", "/v2x"), Some(1));
        assert_eq!(idx.find("Api.Example.COM:8080", "/v1"), Some(1));
    }

    #[test]
    fn longest_wildcard_suffix_wins_and_needs_a_label() {
        let idx = index();
        assert_eq!(idx.find("x.example.com", "/"), Some(3));
        assert_eq!(idx.find("x.eu.example.com", "/"), Some(4));
        assert_eq!(idx.find("example.com", "/"), Some(0));
    }

    #[test]
    fn hostless_routes_catch_the_rest() {
        let idx = index();
        assert_eq!(idx.find("other", "/static/app.js"), Some(5));
        assert_eq!(idx.find("other", "/staticx"), Some(0));
        assert_eq!(idx.find("[::1]:8080", "/"), Some(0));
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let idx = RouteIndex::new([(HostMatch::parse(Some("a")), "/api".to_string(), 0u8)]);
        assert_eq!(idx.find("a", "/"), None);
        assert_eq!(idx.find("b", "/api"), None);
        assert_eq!(idx.find("a", "/api?x=1"), Some(0));
    }

    #[test]
    fn ports_and_ipv6_are_stripped() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}

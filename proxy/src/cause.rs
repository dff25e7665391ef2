//! Finding one kind of cause in an error's source chain: how a failure deep below the proxy
//! (a TLS handshake, the client's own body, an HTTP/2 reset) is told apart. No I/O here.

/// The first error of type `T` in `error`'s source chain, `error` itself included.
pub fn find<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_is_found_at_any_depth_or_not_at_all() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(
            find::<std::io::Error>(&error).map(ToString::to_string).as_deref(),
            Some("inner")
        );
        assert!(find::<Outer>(&error).is_some());
        assert!(find::<std::fmt::Error>(&error).is_none());
    }
}

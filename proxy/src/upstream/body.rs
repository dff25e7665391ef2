//! The body of a request on its way upstream. Nothing is buffered: each variant passes frames
//! through as they come.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::mirror;

/// A request body on its way upstream: the client's own, the client's teed for a mirror, or
/// the mirror's copy.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The client's body, passed through.
    Client(Incoming),
    /// The client's body, each frame also offered to a mirror.
    Tee(mirror::Tee),
    /// A mirror's copy of a client's body.
    Copy(mirror::Copy),
    /// No body: a bodyless request sent again.
    Empty,
}

/// The client's request body failed (malformed, or cut short) while it was streamed
/// upstream: the client's fault, told apart from the upstream's by this type in the error's
/// source chain.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// Whether `error`, or any error below it, is the client's request body failing.
pub fn caused_by_client_body(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::cause::find::<ClientBodyError>(error).is_some()
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx).map_err(|e| ClientBodyError(e).into()),
            UpstreamBody::Tee(b) => Pin::new(b).poll_frame(cx).map_err(|e| ClientBodyError(e).into()),
            UpstreamBody::Copy(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Tee(b) => b.is_end_stream(),
            UpstreamBody::Copy(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Tee(b) => b.size_hint(),
            UpstreamBody::Copy(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

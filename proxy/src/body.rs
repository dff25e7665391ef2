//! The response body the proxy sends: an upstream body passed through frame by frame, or a
//! small body the proxy made itself. Passing through is the whole point: no frame is held
//! back, copied or collected.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::outcome::Completion;

/// A response body on its way to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Upstream {
        body: Incoming,
        completion: Option<Completion>,
    },
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body made by the proxy.
    pub fn full(data: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full((!data.is_empty()).then_some(data)),
        }
    }

    /// An upstream body, with the observation to finish when it ends or is dropped.
    pub fn upstream(body: Incoming, completion: Completion) -> Self {
        ProxyBody {
            inner: Inner::Upstream {
                body,
                completion: Some(completion),
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Upstream { body, completion } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Some(c) = completion.as_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if frame.is_data() {
                                c.data();
                            } else if let Some(trailers) = frame.trailers_ref() {
                                c.trailers(trailers);
                            }
                        }
                        Poll::Ready(None) => c.ended(),
                        Poll::Ready(Some(Err(_))) => c.failed(),
                        Poll::Pending => {}
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(data) => data.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upstream { body, .. } => body.size_hint(),
        }
    }
}

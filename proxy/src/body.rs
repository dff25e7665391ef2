//! The response body the proxy sends: an upstream body passed through frame by frame, or a
//! small body the proxy made itself. Passing through is the whole point: no frame is held
//! back, copied or collected.
//!
//! An upstream body that sends nothing for the route's timeout is cut off: a backend that
//! goes silent after its head would otherwise hold the client forever. gRPC streams are not
//! (they may be long-lived, or wait on their client); their calls' deadlines judge them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::outcome::Completion;

/// Why a response body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream body failed (reset, closed early, malformed).
    #[error("the upstream body failed")]
    Upstream(#[source] hyper::Error),
    /// The upstream sent nothing for this long.
    #[error("the upstream sent nothing for {0:?}")]
    Idle(Duration),
}

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
        /// Longest silence allowed between frames, if any.
        idle: Option<Duration>,
        /// Armed the first time the body has nothing to give; moved on by every frame.
        timer: Option<Pin<Box<Sleep>>>,
        /// Bytes still due by the upstream's declared length, if it declared one.
        remaining: Option<u64>,
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

    /// An upstream body, with the observation to finish when it ends or is dropped, cut off
    /// after `idle` without a frame (never, with `None`).
    pub fn upstream(body: Incoming, mut completion: Completion, idle: Option<Duration>) -> Self {
        // A head that ended its stream (HEAD, 204, a gRPC trailers-only answer) is all there
        // is: nothing will poll the body for an end.
        if body.is_end_stream() {
            completion.ended();
        }
        let remaining = body.size_hint().exact();
        ProxyBody {
            inner: Inner::Upstream {
                body,
                completion: Some(completion),
                idle,
                timer: None,
                remaining,
            },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Upstream {
                body,
                completion,
                idle,
                timer,
                remaining,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Pending => {
                        let Some(idle) = *idle else {
                            return Poll::Pending;
                        };
                        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        if timer.as_mut().poll(cx).is_ready() {
                            if let Some(c) = completion.as_mut() {
                                c.timed_out();
                            }
                            return Poll::Ready(Some(Err(BodyError::Idle(idle))));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(_))) => {
                        if let (Some(timer), Some(idle)) = (timer.as_mut(), *idle) {
                            timer.as_mut().reset(Instant::now() + idle);
                        }
                    }
                    Poll::Ready(_) => {}
                }
                if let Some(c) = completion.as_mut() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                // An empty frame (an h2 END_STREAM on its own) carries no token.
                                if !data.is_empty() {
                                    c.data();
                                }
                                if let Some(left) = remaining.as_mut() {
                                    *left = left.saturating_sub(data.len() as u64);
                                }
                            } else if let Some(trailers) = frame.trailers_ref() {
                                c.trailers(trailers);
                            }
                            // The last frame: trailers always are, and hyper knows the end
                            // from the length or the stream's flag; it will not poll again.
                            // An HTTP/1.1 client is answered once the declared length has
                            // passed, even if the upstream flags its end in a frame after it.
                            if frame.is_trailers() || body.is_end_stream() {
                                c.ended();
                            } else if *remaining == Some(0) {
                                c.whole();
                            }
                        }
                        Poll::Ready(None) => c.ended(),
                        Poll::Ready(Some(Err(_))) => c.failed(),
                        Poll::Pending => {}
                    }
                }
                polled.map(|frame| frame.map(|result| result.map_err(BodyError::Upstream)))
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

//! The request body the hyper path sends to a backend: the client's body,
//! cut off with an error once it passes the size limit, its bytes counted
//! for the app's traffic.
//!
//! It is the body type of the hyper path's backend pool (`hyper_pool`), which
//! needs nothing else of the path that fills it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::traffic::Meter;

type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The request body sent to a backend: the client's, cut off with an error
/// once it passes the size limit (a chunked upload declares no length).
pub struct Upstream {
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    meter: Option<Meter>,
}

impl Upstream {
    pub(crate) fn new(inner: Incoming, limit: Option<u64>, meter: Option<Meter>) -> Self {
        Upstream {
            inner: Some(inner),
            limit,
            seen: 0,
            meter,
        }
    }

    pub(crate) fn empty() -> Self {
        Upstream {
            inner: None,
            limit: None,
            seen: 0,
            meter: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is over the limit of {0} bytes")]
struct TooLarge(u64);

impl Body for Upstream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(meter) = this.meter.as_mut() {
                        meter.received(data.len() as u64);
                    }
                    if let Some(limit) = this.limit.filter(|limit| this.seen > *limit) {
                        return Poll::Ready(Some(Err(Box::new(TooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

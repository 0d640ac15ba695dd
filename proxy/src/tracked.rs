//! A response body that holds what must last as long as it does: its
//! request counted as in flight until the body has been sent (a streamed
//! response is still in flight after the headers), and its bytes counted
//! for the app's traffic as they go out. The hyper path wraps backends'
//! responses in it (the HTTP/1.1 path holds its count while it copies the
//! body).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};

use crate::routes::InFlight;
use crate::traffic::Meter;

pub struct Tracked<B> {
    inner: B,
    _in_flight: Option<InFlight>,
    meter: Option<Meter>,
}

impl<B> Tracked<B> {
    /// Counted in flight until it has been sent.
    pub fn in_flight(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: Some(in_flight),
            meter: None,
        }
    }

    /// Its bytes counted as they go out.
    pub fn metered(inner: B, meter: Meter) -> Self {
        Tracked {
            inner,
            _in_flight: None,
            meter: Some(meter),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(meter)) = (&polled, this.meter.as_mut()) {
            if let Some(data) = frame.data_ref() {
                meter.sent(data.remaining() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

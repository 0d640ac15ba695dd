//! A connection's timeout that costs nothing per request.
//!
//! Every request on a keep-alive connection waits twice, for its head and
//! for the backend's answer, each with a deadline a fixed time ahead. A
//! fresh timer per wait would touch the timer wheel twice per request. This
//! one timer is armed once and left alone while deadlines only move later;
//! when it fires early it is moved to the current deadline (the trick of
//! `idle::IdleIo`), so it is re-armed about once per timeout period.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;

use tokio::time::{Instant, Sleep};

#[derive(Default)]
pub struct Deadline {
    /// Made on first use: a connection that never waits has no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Runs `fut` until `deadline`; `None` if the deadline came first.
    pub async fn run<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            loop {
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if Instant::now() >= deadline => return Poll::Ready(None),
                    // Fired for an earlier deadline: move it to this one.
                    Poll::Ready(()) => sleep.as_mut().reset(deadline),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_only() {
        let mut deadline = Deadline::default();
        let start = Instant::now();
        assert_eq!(
            deadline
                .run(start + Duration::from_secs(5), async { 1 })
                .await,
            Some(1)
        );
        // Armed for 10 s, then asked for 20 s: the early firing is skipped.
        let never = std::future::pending::<()>();
        assert_eq!(
            deadline
                .run(
                    start + Duration::from_secs(10),
                    tokio::time::sleep(Duration::from_secs(1))
                )
                .await,
            Some(())
        );
        assert!(deadline
            .run(start + Duration::from_secs(20), never)
            .await
            .is_none());
        assert_eq!(Instant::now() - start, Duration::from_secs(20));
        // A deadline earlier than the armed one is honoured.
        let t = Instant::now();
        let short = tokio::time::sleep(Duration::from_secs(1));
        assert!(deadline
            .run(t + Duration::from_secs(30), short)
            .await
            .is_some());
        let never = std::future::pending::<()>();
        assert!(deadline
            .run(t + Duration::from_secs(3), never)
            .await
            .is_none());
        assert_eq!(Instant::now() - t, Duration::from_secs(3));
    }
}

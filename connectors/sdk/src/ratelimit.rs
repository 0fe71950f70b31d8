//! A per-connector request budget, so omnisync stays inside each API's rate limit instead of
//! learning it from 429s. Backed by `governor` (GCRA), with jitter so that several workers do
//! not wake in lockstep.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota};

/// A shared request budget: `per_second` requests per second with bursts up to `burst`.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<DefaultDirectRateLimiter>,
    per_second: u32,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimiter({}/s)", self.per_second)
    }
}

impl RateLimiter {
    /// A budget of `per_second` requests per second with bursts of `burst`. Zero values are
    /// raised to one.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        RateLimiter {
            inner: Arc::new(DefaultDirectRateLimiter::direct(quota)),
            per_second: rate.get(),
        }
    }

    /// Waits until the budget allows one more request.
    pub async fn acquire(&self) {
        self.inner
            .until_ready_with_jitter(Jitter::up_to(Duration::from_millis(5)))
            .await;
    }
}

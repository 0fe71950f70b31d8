//! Shopify's cost-based rate limit for the simulator: a leaky bucket (size and restore rate
//! from [`super::SimOptions`]) and an `async-graphql` extension that, once a document has
//! been validated, takes its complexity as the requested cost, refuses documents above the
//! single-query limit (`MAX_COST_EXCEEDED`) and refuses with `THROTTLED` (HTTP 200) when the
//! bucket is short, the way Shopify answers.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{ServerError, ValidationResult};

use super::{RequestInfo, Shared};

/// `extensions.cost.throttleStatus` as the simulator reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// Bucket size.
    pub maximum_available: f64,
    /// Points available now.
    pub currently_available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
}

/// A leaky bucket of cost points.
#[derive(Debug)]
pub struct LeakyBucket {
    maximum: f64,
    restore: f64,
    available: f64,
    at: Instant,
}

impl LeakyBucket {
    /// A full bucket.
    pub fn new(maximum: f64, restore: f64) -> Self {
        LeakyBucket {
            maximum,
            restore,
            available: maximum,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let gained = self.restore * now.duration_since(self.at).as_secs_f64();
        self.available = (self.available + gained).min(self.maximum);
        self.at = now;
    }

    /// The status now.
    pub fn status(&mut self) -> Status {
        self.refill();
        Status {
            maximum_available: self.maximum,
            currently_available: self.available.floor(),
            restore_rate: self.restore,
        }
    }

    /// Takes `cost` points, or says how full the bucket is when it cannot.
    pub fn take(&mut self, cost: f64) -> Result<Status, Status> {
        self.refill();
        if cost > self.available {
            return Err(self.status());
        }
        self.available -= cost;
        Ok(self.status())
    }
}

/// Creates a [`CostExtension`] per request.
pub struct CostExtensionFactory;

impl ExtensionFactory for CostExtensionFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CostExtension)
    }
}

/// Charges each validated document's complexity against the bucket.
pub struct CostExtension;

fn coded(message: String, code: &'static str, extra: &[(&str, i64)]) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    for (k, v) in extra {
        ext.set(*k, *v);
    }
    ext.set("documentation", "https://shopify.dev/api/usage/rate-limits");
    e.extensions = Some(ext);
    e
}

#[async_trait::async_trait]
impl Extension for CostExtension {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let (Some(shared), Some(info)) = (
            ctx.data_opt::<Arc<Shared>>(),
            ctx.data_opt::<Arc<RequestInfo>>(),
        ) else {
            return Ok(result);
        };
        let cost = result.complexity;
        info.set_requested(cost);
        let max = shared.options.max_query_cost;
        if cost > max {
            return Err(vec![coded(
                format!(
                    "Query cost is {cost}, which exceeds the single query max cost limit ({max}).\n\nSee https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\ncost of a query is calculated.\n\nTo query larger amounts of data with fewer limits, bulk operations should be used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
                ),
                "MAX_COST_EXCEEDED",
                &[
                    ("cost", i64::try_from(cost).unwrap_or(i64::MAX)),
                    ("maxCost", i64::try_from(max).unwrap_or(i64::MAX)),
                ],
            )]);
        }
        let taken = shared.bucket().take(cost as f64);
        match taken {
            Ok(_) => {
                info.set_charged(cost);
                Ok(result)
            }
            Err(_) => {
                shared.counters.throttled();
                Err(vec![coded("Throttled".into(), "THROTTLED", &[])])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refuses_when_short_and_refills() {
        let mut b = LeakyBucket::new(100.0, 1000.0);
        assert!(b.take(80.0).is_ok());
        let short = LeakyBucket::new(100.0, 0.0).take(150.0).unwrap_err();
        assert_eq!(short.currently_available, 100.0);
        // At 1000 points/s the bucket is full again almost at once.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(b.status().currently_available, 100.0);
    }
}

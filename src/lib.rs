//! # omnisync
//!
//! The channel-sync daemon as a library, so the binary, the integration tests and the
//! benchmarks drive the same code. Module map:
//!
//! - [`planner`]: pure reconciliation (canonical × observed × rules → plan);
pub mod planner;

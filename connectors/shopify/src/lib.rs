//! omnisync connector for shopify (in progress).

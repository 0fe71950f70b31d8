//! omnisync connector for ebay (in progress).

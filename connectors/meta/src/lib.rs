//! omnisync connector for meta (in progress).

//! omnisync connector for tryton (in progress).

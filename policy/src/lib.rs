//! Liutong usage-policy language (being built under issue 3).
#![forbid(unsafe_code)]

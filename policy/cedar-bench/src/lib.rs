//! Cedar comparison benchmark (being built under issue 3).

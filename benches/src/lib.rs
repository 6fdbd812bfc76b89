//! Criterion benchmarks of the hot path live in `benches/`; this library holds their shared fixtures.

//! The one percentile rule of the benches and examples (shared by `benches/verify.rs`,
//! `examples/load.rs` and `examples/replay_latency.rs`), so that their figures are read alike.

/// The value at `percent` (0 to 100) of `sorted`: the one at index (n − 1) × percent / 100,
/// rounded (the upper of two middles for a median); `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], percent: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let at = (last as f64 * percent / 100.0).round() as usize;
    sorted.get(at.min(last)).copied()
}

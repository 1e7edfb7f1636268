//! A replay store that remembers nothing, to measure the layer's cost apart from its store
//! (shared by `benches/verify.rs` and `examples/load.rs`). It refuses no replay: never use it
//! to serve.

use armor_psk::replay::{Recorded, ReplayRecord, ReplayStore, ReplayStoreError};

/// Answers every request as fresh, at once.
pub struct NullStore;

#[armor_psk::async_trait]
impl ReplayStore for NullStore {
    async fn record(&self, _: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        Ok(Recorded::Fresh)
    }

    fn record_now(&self, _: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        Some(Ok(Recorded::Fresh))
    }
}

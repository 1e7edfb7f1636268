//! The default replay store is a layer's own (its clones share it): a second one built in a
//! process is logged, once. A file of its own, since the count is the process's.

use std::sync::Mutex;

use armor_psk::key_store::MemoryKeyStore;
use armor_psk::VerifyPskLayer;
use tower::Layer;

const WARNING: &str = "a second default replay store was built";

#[test]
fn a_second_default_store_is_logged_once() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(log.reopen().unwrap()))
        .with_ansi(false)
        .finish();
    let logged = || std::fs::read_to_string(log.path()).unwrap();
    let keys = || MemoryKeyStore::builder().key("key-1", "secret").build();
    tracing::subscriber::with_default(subscriber, || {
        let layer = VerifyPskLayer::new(keys());
        let _first = layer.layer(());
        let _clone_shares_it = layer.clone().body_limit(1024).layer(());
        assert!(!logged().contains(WARNING), "{}", logged());

        let _apart = VerifyPskLayer::new(keys()).layer(());
        assert_eq!(logged().matches(WARNING).count(), 1, "{}", logged());
        let _third = VerifyPskLayer::new(keys()).layer(());
        assert_eq!(logged().matches(WARNING).count(), 1, "{}", logged());
    });
}

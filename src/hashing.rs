//! A keyed multiply hash, for maps whose keys an outsider cannot choose to collide: keys that
//! are uniform already, and maps that clients only read.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A keyed hasher for keys that are uniform already (a MAC, a SipHash output): one 64×64-bit
/// multiply per 128-bit key rather than a SipHash pass, with per-store seeds so that a client
/// grinding its own MACs cannot aim them at one bucket. Also for the key ids of a key store
/// built by its operator: a client's lookups insert nothing, so they cannot fill a bucket
/// whatever they hash to, and a lookup costs a multiply per 16 bytes (and one each for the
/// length and the end of the string) rather than a SipHash pass.
#[derive(Clone)]
pub(crate) struct KeyHashing {
    seeds: [u64; 4],
}

impl KeyHashing {
    pub(crate) fn new() -> Self {
        let state = RandomState::new();
        KeyHashing {
            seeds: [0u64, 1, 2, 3].map(|i| state.hash_one(i)),
        }
    }

    /// A hash of `key`.
    pub(crate) fn hash(&self, key: u128) -> u64 {
        folded_multiply(
            key as u64 ^ self.seeds[0],
            (key >> 64) as u64 ^ self.seeds[1],
        )
    }

    /// A second hash of `key`, independent of [`KeyHashing::hash`] (other seeds), for picking
    /// a shard while the first places the key inside it.
    pub(crate) fn other_hash(&self, key: u128) -> u64 {
        folded_multiply(
            key as u64 ^ self.seeds[2],
            (key >> 64) as u64 ^ self.seeds[3],
        )
    }
}

impl Default for KeyHashing {
    fn default() -> Self {
        KeyHashing::new()
    }
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ (full >> 64) as u64
}

impl BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            hashing: self.clone(),
            state: 0,
        }
    }
}

/// The [`Hasher`] of [`KeyHashing`]. A `u128` key takes the fast path; bytes (a key id; moka
/// hashes some keys of its own) are folded in 16 at a time after their length, so that
/// `"a"` and `"a\0"` differ.
pub(crate) struct KeyHasher {
    hashing: KeyHashing,
    state: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.write_usize(bytes.len());
        // Whole chunks apart from the last: one loop over `chunks(16)` zeroes every chunk and
        // copies it by a `memcpy` call, its length unknown (87 instructions more a lookup).
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            let mut word = [0u8; 16];
            word.copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 16];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u128(u128::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, word: u128) {
        self.state = self.hashing.hash(word ^ u128::from(self.state));
    }

    fn write_u64(&mut self, word: u64) {
        self.write_u128(u128::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u128(word as u128);
    }

    /// One multiply, not a length and a chunk: `str` ends its bytes with one of these.
    fn write_u8(&mut self, byte: u8) {
        self.write_u128(u128::from(byte));
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hasher_takes_every_input() {
        let hashing = KeyHashing::new();
        let hash = |write: &dyn Fn(&mut KeyHasher)| {
            let mut hasher = hashing.build_hasher();
            write(&mut hasher);
            hasher.finish()
        };
        assert_ne!(hash(&|h| h.write_u128(1)), hash(&|h| h.write_u128(2)));
        assert_ne!(hash(&|h| h.write(b"abc")), hash(&|h| h.write(b"abd")));
        assert_ne!(hash(&|h| h.write(b"abc")), hash(&|h| h.write(b"abc\0")));
        assert_ne!(hashing.hash_one("key-1"), hashing.hash_one("key-2"));
        assert_eq!(hash(&|h| h.write_u64(7)), hash(&|h| h.write_u128(7)));
    }
}

//! Request ids: one generator for both paths, so the HTTP/1.1 path and the
//! hyper path name requests alike (`X-Request-Id`, the access log).
//!
//! It knows no HTTP library: an id is 32 ASCII hex digits, which either path
//! writes as it needs.

/// 32 hex digits: this process's random seed and a counter, mixed so ids
/// from two proxies (or two restarts) do not collide.
pub fn new_request_id() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of the counter: ids look random, cost nothing.
    let mut z = n.wrapping_add(seed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut id = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, v) in [seed, z].into_iter().enumerate() {
        for k in 0..16 {
            id[i * 16 + k] = HEX[((v >> (60 - 4 * k)) & 0xf) as usize];
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
    }
}

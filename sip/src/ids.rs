//! Fresh identifiers for requests we originate: Via branches, From/To tags and Call-IDs.
//!
//! Randomness comes from the caller's generator so that tests can seed it and stay
//! deterministic; in production pass a cryptographically seeded one (e.g. `rand::rng()`),
//! since predictable tags and Call-IDs let an off-path attacker forge in-dialog requests.

use rand::RngCore;

use crate::syntax;
use crate::typed::MAGIC_COOKIE;

/// Lower-case base32: case-insensitive-safe and free of characters needing escapes.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `len` random base32 characters (5 bits each).
fn random_token<R: RngCore + ?Sized>(rng: &mut R, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut bits = 0u64;
    let mut available = 0u32;
    for _ in 0..len {
        if available < 5 {
            bits = rng.next_u64();
            available = 64;
        }
        out.push(char::from(ALPHABET[(bits & 31) as usize]));
        bits >>= 5;
        available -= 5;
    }
    out
}

/// A Via branch for a new client transaction: the RFC 3261 magic cookie and 80 random bits.
pub fn new_branch<R: RngCore + ?Sized>(rng: &mut R) -> String {
    let mut branch = String::with_capacity(MAGIC_COOKIE.len() + 16);
    branch.push_str(MAGIC_COOKIE);
    branch.push_str(&random_token(rng, 16));
    branch
}

/// A From or To tag with 60 random bits (RFC 3261 §19.3 asks for at least 32).
pub fn new_tag<R: RngCore + ?Sized>(rng: &mut R) -> String {
    random_token(rng, 12)
}

/// A Call-ID with 100 random bits, `@host` appended when `host` is given. Characters of
/// `host` not allowed in a Call-ID are dropped.
pub fn new_call_id<R: RngCore + ?Sized>(rng: &mut R, host: &str) -> String {
    let mut id = random_token(rng, 20);
    let host: String = host
        .chars()
        .filter(|&c| c.is_ascii() && syntax::is_word_char(c as u8))
        .collect();
    if !host.is_empty() {
        id.push('@');
        id.push_str(&host);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    #[test]
    fn identifiers_have_their_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        let branch = new_branch(&mut rng);
        assert!(branch.starts_with("z9hG4bK"));
        assert_eq!(branch.len(), 23);
        let tag = new_tag(&mut rng);
        assert_eq!(tag.len(), 12);
        assert!(tag.bytes().all(|b| ALPHABET.contains(&b)));
        let id = new_call_id(&mut rng, "sbc.example.net");
        assert!(id.ends_with("@sbc.example.net"));
        assert_eq!(new_call_id(&mut rng, "").len(), 20);
        assert!(new_call_id(&mut rng, "a b;c").ends_with("@abc"));
    }

    #[test]
    fn seeded_generators_are_reproducible_and_values_distinct() {
        let a = new_branch(&mut StdRng::seed_from_u64(1));
        let b = new_branch(&mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        let mut rng = StdRng::seed_from_u64(2);
        let tags: HashSet<String> = (0..10_000).map(|_| new_tag(&mut rng)).collect();
        assert_eq!(tags.len(), 10_000);
    }
}

//! Content fingerprints: the `log_id` of a record that carries none.
//!
//! A fingerprint depends on the record's content only, so the copy of a line
//! read from the other region's object gets the same id and the two merge.
//! The scheme is part of the identity of data already indexed: every worker
//! of a fleet, in both regions, must use the same one, and changing it makes
//! records replayed afterwards distinct from the copies indexed before.

use sha1::{Digest, Sha1};
use twox_hash::XxHash3_128;
use uuid::Uuid;

/// How fingerprints are computed (`--fingerprint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scheme {
    /// 128-bit XXH3 as a UUID (version 8): about ten times cheaper than
    /// SHA-1, which on half-fingerprinted data is an eighth of the decode
    /// time. Not collision-resistant against someone who crafts log lines.
    #[default]
    Xxh3,
    /// SHA-1 in a UUID v5 (drsink 0.1's scheme): for data indexed with it,
    /// or where log lines may be crafted to collide with others.
    Sha1,
}

/// Seed of the XXH3 scheme, and (as a UUID) the namespace of the SHA-1 one:
/// changing it would change every generated log_id.
const NAMESPACE: u128 = 0x6d2f_1c4e_8a4b_5d7e_9f10_2b3c_4d5e_6f70;

impl Scheme {
    /// The fingerprint of `parts`, hashed one after another, as a
    /// hyphenated UUID.
    pub fn id(self, parts: &[&[u8]]) -> String {
        let uuid = match self {
            Scheme::Xxh3 => {
                let seed = NAMESPACE as u64;
                // twox-hash picks AVX2 or SSE2 at run time.
                let hash = match parts {
                    [one] => XxHash3_128::oneshot_with_seed(seed, one),
                    _ => {
                        let mut hasher = XxHash3_128::with_seed(seed);
                        parts.iter().for_each(|part| hasher.write(part));
                        hasher.finish_128()
                    }
                };
                uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid()
            }
            Scheme::Sha1 => {
                let mut hasher = Sha1::new();
                hasher.update(Uuid::from_u128(NAMESPACE).as_bytes());
                parts.iter().for_each(|part| hasher.update(part));
                let digest: [u8; 20] = hasher.finalize().into();
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_sha1_bytes(bytes).into_uuid()
            }
        };
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut text).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_of_their_scheme_and_stable() {
        let xxh3 = Scheme::Xxh3.id(&[b"{\"msg\":\"x\"}"]);
        let sha1 = Scheme::Sha1.id(&[b"{\"msg\":\"x\"}"]);
        assert_eq!(Uuid::parse_str(&xxh3).unwrap().get_version_num(), 8);
        assert_eq!(Uuid::parse_str(&sha1).unwrap().get_version_num(), 5);
        // Pinned: these ids are in users' indices. Both were computed
        // independently too, with Python's `uuid.uuid5` and `xxhash`
        // (`xxh3_128_digest(line, seed=0x9f102b3c4d5e6f70)` with the
        // version and variant bits set).
        assert_eq!(sha1, "db94c90b-1c8c-5d80-8a51-96edd3845f6e");
        assert_eq!(xxh3, "75290fa9-20ad-8b9e-b13e-a2d788de7771");
    }

    #[test]
    fn long_records_keep_their_ids() {
        // Past 240 bytes XXH3 takes its vectorised path: pinned so that a
        // change of implementation cannot change ids already indexed.
        // Also computed with Python's `xxhash`, as above.
        let line: Vec<u8> = (0..1000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
        let id = "25f4e8c0-50c8-8341-98b4-035e5b859e2a";
        assert_eq!(Scheme::Xxh3.id(&[&line]), id);
        assert_eq!(Scheme::Xxh3.id(&[&line[..300], &line[300..]]), id);
    }

    #[test]
    fn parts_hash_as_their_concatenation() {
        for scheme in [Scheme::Xxh3, Scheme::Sha1] {
            assert_eq!(
                scheme.id(&[b"host\0h\0", b"seq\x001\0"]),
                scheme.id(&[b"host\0h\0seq\x001\0"])
            );
            assert_ne!(scheme.id(&[b"a"]), scheme.id(&[b"b"]));
        }
    }
}

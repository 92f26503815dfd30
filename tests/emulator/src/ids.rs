//! UUID-shaped ids that encode what they name, so any entity of a tenant of any size can be found
//! from its id alone (no index in memory), and a forged or foreign id is recognised as unknown.

/// A fast, well-mixed 64-bit hash of a few integers (splitmix64 steps). Everything the emulator
/// generates is a pure function of the seed and indices through this.
pub fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for part in parts {
        h = splitmix(h ^ part);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Tenant = 1,
    Project = 2,
    Scan = 3,
    Environment = 4,
    DastScan = 5,
    DastResult = 6,
    Group = 7,
    Application = 8,
    User = 9,
    Token = 10,
}

/// Layout of the 128 bits: check-hi (32) | kind (8) | a (32) | b (32) | check-lo (24).
pub fn encode(seed: u64, kind: Kind, a: u32, b: u32) -> String {
    let check = mix(&[seed, kind as u64, a as u64, b as u64]);
    let v: u128 = ((check >> 32) as u128) << 96
        | (kind as u128) << 88
        | (a as u128) << 56
        | (b as u128) << 24
        | (check & 0xFF_FFFF) as u128;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (v >> 96) as u32,
        (v >> 80) as u16,
        (v >> 64) as u16,
        (v >> 48) as u16,
        v & 0xFFFF_FFFF_FFFF
    )
}

/// The `(a, b)` an id was made from, if it is a well-formed id of this kind from this tenant.
pub fn decode(seed: u64, kind: Kind, id: &str) -> Option<(u32, u32)> {
    if id.len() != 36 {
        return None;
    }
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let v = u128::from_str_radix(&hex, 16).ok()?;
    if ((v >> 88) & 0xFF) as u8 != kind as u8 {
        return None;
    }
    let a = ((v >> 56) & 0xFFFF_FFFF) as u32;
    let b = ((v >> 24) & 0xFFFF_FFFF) as u32;
    (encode(seed, kind, a, b) == id.to_ascii_lowercase()).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_kinds_and_seeds() {
        let id = encode(7, Kind::Scan, 12, 3);
        assert_eq!(decode(7, Kind::Scan, &id), Some((12, 3)));
        assert_eq!(decode(7, Kind::Project, &id), None);
        assert_eq!(decode(8, Kind::Scan, &id), None);
        assert_eq!(decode(7, Kind::Scan, "not-an-id"), None);
        let mut forged = id.clone().into_bytes();
        forged[35] = if forged[35] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            decode(7, Kind::Scan, std::str::from_utf8(&forged).unwrap()),
            None
        );
    }

    #[test]
    fn ids_are_distinct_across_indices() {
        let a = encode(1, Kind::Project, 0, 0);
        let b = encode(1, Kind::Project, 1, 0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}

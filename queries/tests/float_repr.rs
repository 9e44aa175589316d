//! quarry writes floats with Python's `repr`, exactly: checked on 1,000,000 doubles of every
//! magnitude against the reprs CPython gave for the same doubles
//! (fixtures/float_repr: a SHA-1 of all of them and every 250th one).

use quarry_queries::pyrepr::float_repr;

const MASK: u128 = (1 << 64) - 1;

/// SplitMix64, as fixtures/float_repr/generate.py.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0 as u128;
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & MASK;
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & MASK;
        (z ^ (z >> 31)) as u64
    }
}

/// The generator's four recipes, operation for operation.
fn doubles(n: usize) -> Vec<f64> {
    let mut rng = SplitMix64(20261206);
    (0..n)
        .map(|i| match i % 4 {
            0 => f64::from_bits(rng.next()),
            1 => {
                let k = rng.next() % 1_000_000_000;
                let d = rng.next() % 7;
                k as f64 / 10u64.pow(d as u32) as f64
            }
            2 => {
                let m = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                let e = (rng.next() % 120) as i32 - 60;
                m * 2f64.powi(e)
            }
            _ => {
                let k = rng.next() % 1_000_000_000_000;
                let q = 3 + rng.next() % 5;
                k as f64 / q as f64
            }
        })
        .collect()
}

#[test]
fn float_repr_is_pythons_on_a_million_doubles() {
    let expected = include_str!("../../fixtures/float_repr/expected.txt");
    let mut lines = expected.lines();
    let digest = lines.next().and_then(|l| l.strip_prefix("sha1 ")).expect("the digest line");
    let reprs: Vec<String> = doubles(1_000_000).into_iter().map(float_repr).collect();
    for line in lines {
        let (i, text) = line.split_once(' ').expect("index and repr");
        let i: usize = i.parse().unwrap();
        assert_eq!(reprs[i], text, "double #{i} ({:#018x})", doubles(i + 1)[i].to_bits());
    }
    assert_eq!(sha1_smol::Sha1::from(reprs.join("\n")).digest().to_string(), digest, "the million reprs differ from Python's");
}

//! The seeded generators of the unit tests that draw random changes, so that
//! a failure reproduces from its seed.

/// xorshift64*; a zero state stays zero.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A generator from any seed, zero included.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants), whose
/// high bits answer `next`.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    /// Uniform-ish in `0..n` (n > 0).
    pub(crate) fn next(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as u32) % n
    }
}

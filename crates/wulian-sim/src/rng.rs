//! A small seeded generator (xorshift64*): the simulation needs reproducible noise, not
//! cryptographic randomness, and not another dependency.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi] (`lo` when `hi < lo`).
    pub fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        let span = hi.saturating_sub(lo).saturating_add(1);
        lo + self.next_u64() % span
    }

    /// The wait until the next event of a Poisson process with `rate` events per unit of time
    /// (exponentially distributed); `None` when the rate is not positive.
    pub fn wait(&mut self, rate: f64) -> Option<f64> {
        (rate > 0.0 && rate.is_finite()).then(|| -(1.0 - self.unit()).ln() / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(-2.0, 3.0);
            assert_eq!(x, b.range(-2.0, 3.0));
            assert!((-2.0..3.0).contains(&x));
            let n = a.between((3, 5));
            assert_eq!(n, b.between((3, 5)));
            assert!((3..=5).contains(&n));
        }
        assert_eq!(a.between((7, 7)), 7);
        assert_eq!(a.wait(0.0), None);
        let mean = (0..10_000).map(|_| a.wait(2.0).unwrap()).sum::<f64>() / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
